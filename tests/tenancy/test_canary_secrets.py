"""Planted secrets never leak: a `kirim serve` process at DEBUG, an SMTP relay over TLS that
refuses the password, a webhook receiver that fails, and an unknown key. Afterwards no
secret, raw or base64, is in the log, in any response, or in any stored row (apart from the
webhook signing secret in its own endpoint row, which signing needs)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
from sqlalchemy import MetaData, create_engine, select

from tests.support.http_receiver import HttpReceiver, Reply
from tests.support.process import KirimProcess, kirim_cli, kirim_env
from tests.support.smtp_script import Script, ScriptedSmtpServer
from tests.support.tls_certs import loopback_tls
from tests.tenancy.helpers import GOOD, bearer

SMTP_USER = "mailer"
SMTP_PASSWORD = "Canary-Smtp-Passw0rd-7f3a"
FAKE_KEY = "kirim_CanaryUnknownKey0000000000000000000000"


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    forms = [secret, base64.b64encode(raw).decode()]
    # AUTH PLAIN sends base64("\0user\0password"); AUTH LOGIN sends each part alone.
    forms.append(base64.b64encode(b"\0" + SMTP_USER.encode() + b"\0" + raw).decode())
    return forms


def _dump_rows(url: str, skip: set[str]) -> str:
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        parts = []
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                if table.name in skip:
                    continue
                for row in conn.execute(select(table)):
                    parts.append(repr(tuple(row)))
        return "\n".join(parts)
    finally:
        engine.dispose()


def test_no_secret_in_logs_responses_or_rows(tmp_path: Path) -> None:
    tls = loopback_tls()
    script = Script(auth=True, credentials=(SMTP_USER, "the-right-one"))
    smtp = ScriptedSmtpServer(script, tls_context=tls.server_context())
    db_path = tmp_path / "k.db"
    receiver = HttpReceiver(default=Reply(500, b"receiver broke"))
    with smtp.in_thread(), receiver.start():
        env = kirim_env(
            database_url=f"sqlite:///{db_path}",
            smtp_url=f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}?tls=starttls",
            log_level="DEBUG",
            retry_min_delay=0.2,
            retry_max_delay=0.5,
            worker_poll_interval=0.05,
            webhook_allowed_networks="127.0.0.0/8",
            webhook_retry_delays="0.2,0.2",
        )
        env["SSL_CERT_FILE"] = str(tls.write_ca_bundle(tmp_path / "ca.pem"))
        kirim_cli(env, "migrate")
        key = kirim_cli(env, "keys", "create", "--name", "canary").strip()
        log = tmp_path / "kirim.log"
        responses: list[str] = []
        with (
            KirimProcess(env, log=log) as proc,
            httpx.Client(
                base_url=proc.base_url, headers=bearer(key), timeout=30, trust_env=False
            ) as client,
        ):

            def keep(r: httpx.Response) -> httpx.Response:
                responses.append(f"{r.status_code} {dict(r.headers)!r} {r.text}")
                return r

            hook = keep(client.post("/v1/webhooks", json={"url": receiver.url_for("/hook")}))
            assert hook.status_code == 201, hook.text
            webhook_secret = hook.json()["secret"]
            assert webhook_secret.startswith("whsec_")
            responses.pop()  # the one response that must show the secret
            sent = keep(client.post("/v1/messages", json=GOOD))
            assert sent.status_code == 202
            mid = sent.json()["id"]
            keep(client.get("/v1/messages", headers=bearer(FAKE_KEY)))
            keep(client.get("/v1/messages", headers={"Authorization": f"Basic {key}"}))
            keep(client.post("/v1/keys", json={"name": "x", "scopes": ["nope"]}))
            keep(client.get("/v1/keys"))

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                status = keep(client.get(f"/v1/messages/{mid}")).json()
                if status["attempts"] and len(receiver.requests) >= 2:
                    break
                time.sleep(0.1)
            assert status["attempts"], "no delivery attempt was made"
            assert len(receiver.requests) >= 2, "the webhook was not attempted twice"
            # The relay saw the TLS handshake and a refused AUTH: the failure path ran.
            assert any(c.tls for c in smtp.connections)
            assert "535" in repr(status["attempts"]) or "auth" in repr(status).lower()
            keep(client.get(f"/v1/webhooks/{hook.json()['id']}/deliveries"))
        text = log.read_text()
        assert "DEBUG" in text or '"level":"debug"' in text, "no DEBUG lines"
        rows = _dump_rows(f"sqlite:///{db_path}", skip={"webhook_endpoints"})
        endpoint_rows = _dump_rows(f"sqlite:///{db_path}", skip=set())
    everywhere = {"log": text, "responses": "\n".join(responses), "rows": rows}
    secrets = [key, FAKE_KEY, SMTP_PASSWORD, webhook_secret, webhook_secret[len("whsec_") :]]
    for secret in secrets:
        for form in _forms(secret):
            for where, haystack in everywhere.items():
                assert form not in haystack, f"{secret[:10]}… ({form[:12]}…) found in {where}"
    # Signing needs the secret, so it is stored, but only in the endpoint row.
    assert webhook_secret in endpoint_rows
