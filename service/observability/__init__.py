"""Metrics, structured logs, trace context and readiness: what an operator watches."""
