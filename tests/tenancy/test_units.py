"""Pure parts: Idempotency-Key syntax, fingerprints, rate parsing and buckets, JSON depth,
and log redaction."""

from __future__ import annotations

import base64
import logging

import pytest

from service.api.errors import ApiError
from service.api.limits import json_too_complex
from service.idempotency import fingerprint, parse_key
from service.logs import redact, redact_record
from service.ratelimit import OFF, LocalBuckets, Rate, parse_rate


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], None),
        (["abc"], "abc"),
        (['"8e03978e-40d5-43e8-bc93-6894a57f9324"'], "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        (["order/123 retry"], "order/123 retry"),
        (["x" * 255], "x" * 255),
    ],
)
def test_idempotency_key_accepted(values: list[str], expected: str | None) -> None:
    assert parse_key(values) == expected


@pytest.mark.parametrize(
    "values",
    [[""], ["   "], ['""'], ["x" * 256], ["a\tb"], ["a\x00b"], ["caf\u00e9"], ["a", "b"]],
)
def test_idempotency_key_refused(values: list[str]) -> None:
    with pytest.raises(ApiError) as err:
        parse_key(values)
    assert err.value.status == 400


def test_fingerprint_is_canonical_and_covers_method_path_body() -> None:
    a = fingerprint("POST", "/v1/messages", {"to": ["x"], "subject": "s"})
    assert a == fingerprint("post", "/v1/messages", {"subject": "s", "to": ["x"]})
    assert a != fingerprint("POST", "/v1/messages", {"to": ["x"], "subject": "t"})
    assert a != fingerprint("POST", "/v1/other", {"to": ["x"], "subject": "s"})
    assert a != fingerprint("PUT", "/v1/messages", {"to": ["x"], "subject": "s"})


def test_parse_rate() -> None:
    assert parse_rate("0") == OFF and not OFF.enabled
    assert parse_rate("5") == Rate(5, 5)
    assert parse_rate("0.5") == Rate(0.5, 1)
    assert parse_rate("10, 40") == Rate(10, 40)
    for bad in ("", "x", "1,2,3", "-1", "5,0.5", "inf", "nan,2"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_local_bucket_burst_refill_and_retry_after() -> None:
    buckets, rate = LocalBuckets(), Rate(2, 3)
    assert [buckets.take("k", rate, 100.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = buckets.take("k", rate, 100.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert buckets.take("k", rate, 100.5).allowed  # one token back after 1/rate s
    assert not buckets.take("k", rate, 100.5).allowed
    assert buckets.take("other", rate, 100.5).allowed  # buckets are independent
    buckets.refund("k", rate, 100.5)
    assert buckets.take("k", rate, 100.5).allowed


def test_local_buckets_forget_full_ones_to_bound_memory() -> None:
    buckets, rate = LocalBuckets(max_entries=10), Rate(100, 1)
    for i in range(100):
        assert buckets.take(f"k{i}", rate, float(i)).allowed
    assert len(buckets._buckets) <= 10


@pytest.mark.parametrize(
    "body, too_complex",
    [
        (b"[" * 10_000 + b"]" * 10_000, True),
        (b"[" * 10_000, True),
        (b'{"a":' * 33 + b"1" + b"}" * 33, True),
        (b'{"a":' * 32 + b"1" + b"}" * 32, False),
        (b'{"s": "' + b"[" * 10_000 + b'"}', False),  # brackets inside a string do not nest
        (b'{"s": "\\"' + b"[" * 100 + b'", "t": "\\\\"}', False),
        (b'{"s": "\\\\"' + b"," + b"[" * 100 + b"1" + b"]" * 100 + b"}", True),
        (b"[]" * 200_000, True),  # too many containers, however shallow
        (b'{"to": [' + b'"a@b.c",' * 1000 + b'"a@b.c"]}', False),
        (b'{"s": "' + b"[" * 100, False),  # past an unterminated quote, all is string
        (b"[" * 33 + b'"' + b"]" * 33, True),
        (b"[" + b'{"a": "]]]]", "b": "}}}"}, ' * 20 + b"[" * 31 + b"]" * 32, False),
        (b"[" + b'{"a": "]]]]", "b": "}}}"}, ' * 20 + b"[" * 32 + b"]" * 33, True),
    ],
)
def test_json_depth_scan(body: bytes, too_complex: bool) -> None:
    assert (json_too_complex(body, 32) is not None) is too_complex


KEY = "kirim_Zx8vQ2mN4pL7rT1yU5wE9sD3fG6hJ0kC"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PLAIN = base64.b64encode(b"\0mailer\0CanaryPassw0rd").decode()


@pytest.mark.parametrize(
    "text, secret",
    [
        (f"Authorization: Bearer {KEY}", KEY),
        (f"headers={{'authorization': 'Bearer {KEY}'}}", KEY),
        (f"[(b'authorization', b'Bearer {KEY}')]", KEY),
        (f"secret is {WHSEC} here", WHSEC),
        (f"AUTH PLAIN {PLAIN}", PLAIN),
        ("smtp://mailer:CanaryPassw0rd@relay:587?tls=starttls", "CanaryPassw0rd"),
        ("password=CanaryPassw0rd&x=1", "CanaryPassw0rd"),
        ('{"secret": "CanaryPassw0rd"}', "CanaryPassw0rd"),
    ],
)
def test_redact(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "[redacted]" in out


def test_redact_leaves_ordinary_text() -> None:
    text = "message msg_01JABCDEF sent to b@example.com: 250 2.0.0 Ok"
    assert redact(text) == text


def test_redact_record_covers_args_and_exception_text() -> None:
    try:
        raise RuntimeError(f"login failed for smtp://u:CanaryPassw0rd@h key {KEY}")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "got %s and %d", (KEY, 7), (type(exc), exc, None)
        )
    redact_record(record)
    formatted = logging.Formatter().format(record)
    assert KEY not in formatted and "CanaryPassw0rd" not in formatted
    assert "got kirim_[redacted] and 7" in formatted


def test_redact_extras_filter() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "attempt", None, None)
    record.error = f"535 for smtp://u:CanaryPassw0rd@h with {KEY}"
    record.reply = ["Bearer " + KEY]
    record.code = 535
    from service.logs import RedactExtras

    assert RedactExtras().filter(record)
    assert "CanaryPassw0rd" not in record.error and KEY not in record.error
    assert KEY not in str(record.reply) and record.code == 535
