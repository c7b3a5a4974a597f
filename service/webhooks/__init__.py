"""Webhook delivery pieces: signing, SSRF guard, pinned HTTP client and retry policy."""
