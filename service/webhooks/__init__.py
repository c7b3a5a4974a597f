"""Webhook delivery pieces: signing, SSRF guard, pinned HTTP client and retry policy.

One attempt, as the dispatcher runs it::

    checked = await check_url(endpoint.url, allowed_networks)   # again on every attempt
    body = json_bytes(event)
    hdrs = headers(endpoint.secrets, event_id, int(time.time()), body)
    outcome = await post_event(client, checked, hdrs, body)
    verdict = classify(outcome.status_code, outcome.error, retry_after=outcome.retry_after)
    delay = retry_delay(verdict, attempt_number, delays, rng)    # None: done or failed
"""

from service.webhooks.http_client import (
    PostOutcome,
    WebhookClient,
    create_client,
    post_event,
)
from service.webhooks.schedule import (
    DEFAULT_DELAYS,
    Action,
    InvalidRetryDelays,
    Verdict,
    classify,
    next_delay,
    parse_delays,
    parse_retry_after,
    retry_delay,
)
from service.webhooks.signing import (
    InvalidSecret,
    decode_secret,
    headers,
    new_secret,
    sign,
    signature_header,
)
from service.webhooks.ssrf import (
    CheckedUrl,
    UnsafeUrl,
    address_problem,
    check_url,
    parse_networks,
)

__all__ = [
    "DEFAULT_DELAYS",
    "Action",
    "CheckedUrl",
    "InvalidRetryDelays",
    "InvalidSecret",
    "PostOutcome",
    "UnsafeUrl",
    "Verdict",
    "WebhookClient",
    "address_problem",
    "check_url",
    "classify",
    "create_client",
    "decode_secret",
    "headers",
    "new_secret",
    "next_delay",
    "parse_delays",
    "parse_networks",
    "parse_retry_after",
    "post_event",
    "retry_delay",
    "sign",
    "signature_header",
]
