"""A full run of `kirim serve`: every log line is JSON, and one trace id follows the message
from the request through the SMTP attempt to the webhook request."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from service.observability.logging import hash_address
from tests.support.http_receiver import HttpReceiver
from tests.support.process import KirimProcess, kirim_cli, kirim_env
from tests.support.smtpd import RecordingSmtpServer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def _wait(predicate, within: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_json_logs_carry_the_trace_id_end_to_end(tmp_path: Path) -> None:
    log = tmp_path / "kirim.log"
    with RecordingSmtpServer() as smtp, HttpReceiver() as hooks:
        env = kirim_env(
            database_url=f"sqlite:///{tmp_path / 'k.db'}",
            smtp_url=smtp.url,
            worker_poll_interval=0.05,
            webhook_allowed_networks="127.0.0.0/8",
            smtp_timeout_scale=0.05,
        )
        kirim_cli(env, "migrate")
        key = kirim_cli(env, "keys", "create", "--name", "ops").strip()
        with KirimProcess(env, "serve", log=log) as proc:
            h = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=proc.base_url, headers=h, trust_env=False) as c:
                r = c.post(
                    "/v1/webhooks", json={"url": hooks.url_for("/hook"), "events": ["message.sent"]}
                )
                assert r.status_code == 201, r.text
                r = c.post(
                    "/v1/messages",
                    json={
                        "from": "s@example.org",
                        "to": ["Reader@example.com"],
                        "subject": "t",
                        "text": "x",
                    },
                    headers={"traceparent": PARENT},
                )
                assert r.status_code == 202, r.text
                mid = r.json()["id"]
                # A malformed traceparent is ignored: the message gets a trace of its own.
                r2 = c.post(
                    "/v1/messages",
                    json={
                        "from": "s@example.org",
                        "to": ["b@example.com"],
                        "subject": "t",
                        "text": "x",
                    },
                    headers={"traceparent": f"00-{TRACE.upper()}-00f067aa0ba902b7-01"},
                )
                assert r2.status_code == 202
                r3 = c.post(
                    "/v1/messages/batch",
                    json={
                        "messages": [
                            {
                                "from": "s@example.org",
                                "to": ["c@example.com"],
                                "subject": "t",
                                "text": "x",
                            }
                        ]
                    },
                )
                assert r3.status_code == 202, r3.text
                in_batch = r3.json()["data"][0]["id"]
                _wait(lambda: c.get(f"/v1/messages/{mid}").json()["status"] == "sent")
                got = hooks.wait_for(2, timeout=20)

    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]  # every line parses, uvicorn's too
    assert all({"time", "level", "logger", "msg"} <= d.keys() for d in docs)

    accepts = [d for d in docs if d.get("event") == "accept" and d["message_id"] == mid]
    assert len(accepts) == 1
    assert accepts[0]["trace_id"] == TRACE
    assert accepts[0]["recipients"] == [hash_address("Reader@example.com")]
    assert accepts[0]["tenant"] == "default"
    attempts = [d for d in docs if d.get("event") == "attempt" and d["message_id"] == mid]
    assert len(attempts) == 1
    a = attempts[0]
    assert (a["trace_id"], a["status"], a["attempt"], a["code"]) == (TRACE, "sent", 1, 250)
    assert a["recipient"] == hash_address("reader@example.com")
    assert "Reader@example.com" not in log.read_text()  # addresses are hashed by default
    assert key not in log.read_text()

    others = [
        d for d in docs if d.get("event") == "accept" and d["message_id"] not in (mid, in_batch)
    ]
    assert len(others) == 1 and others[0]["trace_id"] not in (None, TRACE)
    # A batch's messages are logged one by one, as every accept is.
    batched = [d for d in docs if d.get("event") == "accept" and d["message_id"] == in_batch]
    assert len(batched) == 1 and batched[0]["recipients"] == [hash_address("c@example.com")]

    mine = [q for q in got if json.loads(q.body)["data"]["message_id"] == mid]
    assert len(mine) == 1
    tp = mine[0].header("traceparent") or ""
    assert tp.startswith(f"00-{TRACE}-") and tp.endswith("-01")
    assert tp != PARENT  # Kirim's own span, not the caller's
    hooks_logged = [d for d in docs if d.get("event") == "webhook" and d["message_id"] == mid]
    assert hooks_logged and hooks_logged[0]["trace_id"] == TRACE
