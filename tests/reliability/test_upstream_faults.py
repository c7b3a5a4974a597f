"""Group B: upstream SMTP faults against `kirim serve` as a subprocess (test plan B1-B8)."""

from __future__ import annotations

import base64
import itertools
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.harness import no_tracebacks, serve, wait_until
from tests.reliability.invariants import check_db
from tests.support.ports import free_port
from tests.support.smtp_script import (
    DataFault,
    Delivery,
    Drop,
    Script,
    ScriptedSmtpServer,
    Stall,
)

pytestmark = pytest.mark.slow


def test_b1_upstream_down_then_up(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = ScriptedSmtpServer(Script(), port=port)
    with serve(database_url, f"smtp://127.0.0.1:{port}?tls=none", tmp_path) as (_, api):
        mid = api.send(["b1@example.com"])["id"]
        wait_until(lambda: len(api.get(mid)["attempts"]) >= 2, what="two refused attempts")
        assert api.statuses(mid)["b1@example.com"] in {"deferred", "sending"}
        with server.in_thread():
            msg = api.wait_all(mid, "sent")
            received = server.messages
    attempts = msg["attempts"]
    assert all(a["outcome"] == "temporary" and a["stage"] == "connect" for a in attempts[:-1])
    assert attempts[-1]["outcome"] == "accepted"
    types = [e["type"] for e in msg["events"]]
    assert types[0] == "message.queued" and types[-1] == "message.sent"
    assert "message.deferred" in types and types.count("message.sent") == 1
    check_db(database_url, received)
    no_tracebacks(tmp_path)


def test_b2_421_greeting_and_garbage_replies(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    greetings = itertools.count(1)
    rcpts = itertools.count(1)
    # First session: 421 greeting. Then RCPT answers garbage, then an impossible code 600,
    # then "354" to RCPT, then 421 mid-session, then 250.
    bad = {1: "hello there, no code", 2: "600 what", 3: "354 go ahead?", 4: "421 4.3.2 bye"}
    smtp.script = Script(
        greeting=lambda _c: "421 4.3.2 busy" if next(greetings) == 1 else "220 ok",
        rcpt=lambda _r: bad.get(next(rcpts), "250 2.1.5 Ok"),
    )
    with serve(database_url, smtp.url(), tmp_path) as (_, api):
        mid = api.send(["b2@example.com"])["id"]
        msg = api.wait_all(mid, "sent")
    outcomes = [(a["outcome"], a["stage"]) for a in msg["attempts"]]
    assert outcomes[0] == ("temporary", "greeting") or outcomes[0][0] == "temporary"
    assert [o for o, _ in outcomes] == ["temporary"] * 5 + ["accepted"], outcomes
    assert all(a["reply"] is None or len(a["reply"]) <= 1000 for a in msg["attempts"])
    check_db(database_url, smtp.messages)
    no_tracebacks(tmp_path)


def test_b3_451_for_one_of_three(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    tries: Counter[str] = Counter()

    def rcpt(r: str) -> str:
        tries[r] += 1
        return "451 4.3.0 Try later" if r.startswith("c@") and tries[r] == 1 else "250 Ok"

    smtp.script = Script(rcpt=rcpt)
    to = ["a@example.com", "b@example.com", "c@example.com"]
    with serve(database_url, smtp.url(), tmp_path) as (_, api):
        mid = api.send(to)["id"]
        api.wait_all(mid, "sent")
    first, second = smtp.messages
    assert sorted(first.recipients) == ["a@example.com", "b@example.com"]
    assert second.recipients == ("c@example.com",)  # retried alone
    snap = check_db(database_url, smtp.messages)
    assert [a["outcome"] for a in snap.attempts_of("c@example.com")] == ["temporary", "accepted"]
    assert len(snap.attempts_of("a@example.com")) == 1


def test_b4_550_at_rcpt_and_554_at_dot(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    def rcpt(r: str) -> str | list[str]:
        if r == "gone@example.com":
            return [
                "550-5.1.1 The email account that you tried to reach",
                "550 5.1.1 does not exist",
            ]
        return "250 Ok"

    def dot(d: Delivery) -> str:
        return "554 5.6.0 Content rejected" if "spam" in d.data.decode() else "250 Ok"

    smtp.script = Script(rcpt=rcpt, dot=dot)
    with serve(database_url, smtp.url(), tmp_path) as (_, api):
        one = api.send(["ok1@example.com", "gone@example.com"])["id"]
        two = api.send(["x1@example.com", "x2@example.com"], text="spam spam")["id"]
        api.wait_status(
            one,
            lambda st: (
                "queued" not in st.values()
                and "sending" not in st.values()
                and "deferred" not in st.values()
            ),
        )
        api.wait_all(two, "bounced")
        msg_one = api.get(one)
    assert api is not None
    gone = next(r for r in msg_one["recipients"] if r["email"] == "gone@example.com")
    assert gone["status"] == "bounced"
    assert gone["last_reply"]["code"] == 550 and gone["last_reply"]["enhanced_code"] == "5.1.1"
    snap = check_db(database_url, smtp.messages)
    assert snap.recipient("ok1@example.com")["status"] == "sent"
    for email in ("gone@example.com", "x1@example.com", "x2@example.com"):
        assert len(snap.attempts_of(email)) == 1, "a permanent failure is never retried"
        assert snap.events_of(email).count("message.bounced") == 1
    assert [a["stage"] for a in snap.attempts_of("x1@example.com")] == ["dot"]
    assert [a["code"] for a in snap.attempts_of("x2@example.com")] == [554]


@pytest.mark.parametrize("too_many", ["452 4.5.3 Too many recipients", "552 5.5.3 Too many"])
def test_b5_too_many_recipients_after_100(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path, too_many: str
) -> None:
    smtp.script = Script(max_rcpt=100, too_many=too_many)
    to = [f"r{i:03d}@example.com" for i in range(150)]
    with serve(
        database_url, smtp.url(), tmp_path, max_recipients=200, smtp_max_recipients=1000
    ) as (_, api):
        mid = api.send(to)["id"]
        api.wait_all(mid, "sent")
    sizes = [len(m.recipients) for m in smtp.messages]
    assert sizes == [100, 50]
    assert sorted(smtp.messages[0].recipients + smtp.messages[1].recipients) == to
    snap = check_db(database_url, smtp.messages)
    assert all(len(snap.attempts_of(e)) == 1 for e in to)  # the rest went in a new transaction


def test_b6_drop_during_data(database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path) -> None:
    # The body is larger than the socket buffers can absorb, so the client is still
    # writing when the server drops the connection: the server never saw the dot.
    smtp.script = Script(data_fault=DataFault(after_bytes=1000))
    blob = base64.b64encode(os.urandom(3_000_000)).decode()
    attachment = {"filename": "big.bin", "content": blob}
    with serve(database_url, smtp.url(), tmp_path, max_body_bytes=20_000_000) as (_, api):
        mid = api.send(["b6@example.com"], attachments=[attachment])["id"]
        wait_until(lambda: len(api.get(mid)["attempts"]) >= 1, what="first attempt")
        smtp.script = Script()
        msg = api.wait_all(mid, "sent")
    attempts = msg["attempts"]
    assert (attempts[0]["outcome"], attempts[0]["stage"]) == ("temporary", "data")
    assert not any(a["possible_duplicate"] for a in attempts)
    assert msg["recipients"][0]["possible_duplicate"] is False
    assert len(smtp.messages) == 1
    check_db(database_url, smtp.messages)


@pytest.mark.parametrize("loss", ["reset", "no_reply"])
def test_b7_lost_after_dot_is_a_flagged_duplicate(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path, loss: str
) -> None:
    dots = itertools.count(1)
    # The server stores the message, then the reply never arrives (reset, or too late).
    lost = Drop(keep=True, reset=True) if loss == "reset" else Stall(6.0, "250 2.0.0 late")
    smtp.script = Script(dot=lambda _d: lost if next(dots) == 1 else "250 2.0.0 Ok")
    with serve(database_url, smtp.url(), tmp_path) as (_, api):
        sent = api.send(["b7@example.com"])
        msg = api.wait_all(sent["id"], "sent")
    assert [m.message_id for m in smtp.messages] == [sent["message_id"]] * 2
    assert smtp.messages[0].data == smtp.messages[1].data  # the same bytes
    first, second = msg["attempts"]
    assert (first["outcome"], first["stage"], first["possible_duplicate"]) == (
        "unknown",
        "dot",
        True,
    )
    assert second["outcome"] == "accepted" and second["possible_duplicate"] is True
    assert msg["recipients"][0]["possible_duplicate"] is True
    check_db(database_url, smtp.messages, allow_duplicates={"b7@example.com"})


def test_b8_slow_final_reply_is_not_retried(
    database_url: str, smtp: ScriptedSmtpServer, tmp_path: Path
) -> None:
    # 0.9 x the final-dot timeout (3 s in the harness).
    smtp.script = Script(dot=Stall(2.7, "250 2.0.0 Ok, slowly"))
    with serve(database_url, smtp.url(), tmp_path) as (_, api):
        mid = api.send(["b8@example.com"])["id"]
        msg = api.wait_all(mid, "sent")
    assert [a["outcome"] for a in msg["attempts"]] == ["accepted"]
    assert msg["recipients"][0]["possible_duplicate"] is False
    assert len(smtp.messages) == 1
    check_db(database_url, smtp.messages)
