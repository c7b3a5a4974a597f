"""Pure rules: states, backoff, decisions, addresses, ids."""

from __future__ import annotations

import random

import pytest

from service.delivery.decide import decide, retry_hint
from service.delivery.transport import Outcome, RecipientResult, Reply, Stage
from service.domain.addresses import parse_address
from service.domain.envelope import compose
from service.domain.errors import InvalidRequest
from service.domain.ids import is_id, new_id
from service.domain.retry import RetryPolicy
from service.domain.status import Status, can_transition, summarise

POLICY = RetryPolicy(min_delay=300, max_delay=4000, lifetime=5 * 86400, jitter=0)


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 4000), (6, 4000), (40, 4000)],
)
def test_backoff_doubles_and_is_clamped(attempts: int, delay: float) -> None:
    assert POLICY.delay(attempts) == delay


def test_jitter_stays_within_ten_percent() -> None:
    p = RetryPolicy(min_delay=100, max_delay=100, jitter=0.1)
    rng = random.Random(1)
    delays = [p.delay(1, rng) for _ in range(200)]
    assert min(delays) >= 90 and max(delays) <= 110 and len(set(delays)) > 100


def test_deadline_is_the_earlier_of_lifetime_and_expiry() -> None:
    assert POLICY.deadline(1000, None) == 1000 + 5 * 86400
    assert POLICY.deadline(1000, 2000) == 2000


def _r(outcome: Outcome, code: int | None = 250, text: str = "ok") -> RecipientResult:
    return RecipientResult("a@example.com", outcome, Reply(code, None, text), Stage.DOT)


@pytest.mark.parametrize(
    ("outcome", "code", "status", "event"),
    [
        (Outcome.ACCEPTED, 250, Status.SENT, "message.sent"),
        (Outcome.PERMANENT, 550, Status.BOUNCED, "message.bounced"),
        (Outcome.TEMPORARY, 451, Status.DEFERRED, "message.deferred"),
        (Outcome.UNKNOWN, None, Status.DEFERRED, "message.deferred"),
    ],
)
def test_decide_table(outcome: Outcome, code: int | None, status: Status, event: str) -> None:
    d = decide(_r(outcome, code), attempts=1, now=0, deadline=10_000, policy=POLICY)
    assert (d.status, d.event) == (status, event)
    if status is Status.DEFERRED:
        assert d.next_attempt_at == 300
        assert d.reason == (
            "possible_duplicate" if outcome is Outcome.UNKNOWN else "smtp_temporary"
        )


def test_temporary_after_deadline_fails_as_expired() -> None:
    d = decide(_r(Outcome.TEMPORARY, 451), attempts=9, now=10_000, deadline=10_000, policy=POLICY)
    assert (d.status, d.reason, d.event) == (Status.FAILED, "expired", "message.failed")


def test_next_attempt_never_after_deadline() -> None:
    d = decide(_r(Outcome.TEMPORARY, 451), attempts=5, now=9_900, deadline=10_000, policy=POLICY)
    assert d.next_attempt_at == 10_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("451 4.7.1 Try again in 5 minutes", 300),
        ("450 greylisted, retry in 90 seconds", 90),
        ("421 try again after 2 hours", 7200),
        ("451 temporary failure", None),
    ],
)
def test_retry_hints(text: str, seconds: float | None) -> None:
    assert retry_hint(text) == seconds


def test_retry_hint_is_clamped_by_policy() -> None:
    d = decide(
        _r(Outcome.TEMPORARY, 451, "try again in 10 seconds"),
        attempts=1,
        now=0,
        deadline=1e9,
        policy=POLICY,
    )
    assert d.next_attempt_at == 300  # never hammer faster than the minimum
    d = decide(
        _r(Outcome.TEMPORARY, 451, "try again in 30 minutes"),
        attempts=1,
        now=0,
        deadline=1e9,
        policy=POLICY,
    )
    assert d.next_attempt_at == 1800


def test_transitions() -> None:
    assert can_transition(Status.QUEUED, Status.SENDING)
    assert can_transition(Status.SENDING, Status.SENT)
    assert can_transition(Status.DEFERRED, Status.SENDING)
    assert not can_transition(Status.SENT, Status.SENDING)
    assert not can_transition(Status.BOUNCED, Status.DEFERRED)
    assert not can_transition(Status.QUEUED, Status.SENT)


@pytest.mark.parametrize(
    ("states", "summary"),
    [
        (["sent", "sent"], "sent"),
        (["sent", "deferred"], "deferred"),
        (["sent", "sending", "queued"], "sending"),
        (["sent", "bounced"], "partially_sent"),
        (["bounced", "failed"], "failed"),
        (["bounced"], "bounced"),
        (["scheduled"], "scheduled"),
    ],
)
def test_message_summary(states: list[str], summary: str) -> None:
    assert summarise(states) == summary


@pytest.mark.parametrize(
    ("raw", "email", "name"),
    [
        ("a@example.com", "a@example.com", None),
        ("Ann <ann@example.com>", "ann@example.com", "Ann"),
        ('"Doe, Jane" <jd@example.com>', "jd@example.com", "Doe, Jane"),
        ("x@bücher.example", "x@xn--bcher-kva.example", None),
    ],
)
def test_addresses(raw: str, email: str, name: str | None) -> None:
    a = parse_address(raw)
    assert (a.email, a.name) == (email, name)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "nobody",
        "a@",
        "@b.com",
        "a..b@x.com",
        "a@b.com.",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        "a@b.com>\r\nRCPT TO:<x@y>",
        "a@b.com> NOTIFY=SUCCESS",
        "<a@b.com",
    ],
)
def test_bad_addresses(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_address(raw)


def test_non_ascii_local_part_needs_smtputf8() -> None:
    assert parse_address("用户@例子.广告").smtputf8


def test_compose_reports_every_bad_field() -> None:
    with pytest.raises(InvalidRequest) as info:
        compose(sender="bad", to=["also bad"], subject="x\r\ny", text=None)
    fields = {e.field for e in info.value.errors}
    assert fields == {"from", "to.0", "subject", "text"}


def test_recipients_are_unique_across_to_cc_bcc() -> None:
    d = compose(
        sender="a@example.com",
        to=["b@example.com"],
        cc=["B@EXAMPLE.COM", "c@example.com"],
        bcc=["b@example.com"],
        subject="s",
        text="t",
    )
    assert [r.address.email for r in d.recipients] == ["b@example.com", "c@example.com"]
    assert [r.kind for r in d.recipients] == ["to", "cc"]


def test_ids_are_time_ordered_and_checkable() -> None:
    a, b = new_id("msg", 1000.0), new_id("msg", 1001.0)
    assert a < b and is_id(a, "msg") and not is_id(a, "rcp") and not is_id("msg_x", "msg")


@pytest.mark.parametrize(
    ("field", "address", "expected"),
    [
        ("to", "b@example.com", False),
        ("to", "用户@例子.广告", True),
        ("cc", "用户@例子.广告", True),
        ("bcc", "用户@例子.广告", True),
        ("reply_to", "用户@例子.广告", False),  # not an envelope recipient
    ],
)
def test_draft_needs_smtputf8_for_a_non_ascii_envelope_address(
    field: str, address: str, expected: bool
) -> None:
    lists = {"to": ["a@example.com"], field: [address]} if field != "to" else {"to": [address]}
    draft = compose(sender="s@example.com", subject="s", text="t", **lists)
    assert draft.smtputf8 is expected
    assert compose(sender="用户@例子.广告", to=["a@example.com"], subject="s", text="t").smtputf8
