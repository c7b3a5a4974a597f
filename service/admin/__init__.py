"""Operator tools: queue stats, bulk retry, cancel and bounce, delivery pauses."""
