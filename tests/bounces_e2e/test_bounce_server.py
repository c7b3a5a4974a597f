"""`kirim bounce-server`: the inbound SMTP receiver as its own process, same apply path."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest

from service.bounces import make_return_path
from service.db.engine import Database
from tests.bounces.servers import stop, wait_for_port
from tests.bounces_e2e.conftest import (
    RETURN_PATH,
    SECRET,
    bounce_settings,
    events_of,
    fixture,
    retarget,
    send_and_wait_sent,
    suppressed,
)
from tests.support.app import live_app, wait_for
from tests.support.ports import free_port
from tests.support.smtpd import RecordingSmtpServer

KIRIM = str(Path(sys.executable).with_name("kirim"))


async def _deliver(port: int, raw: bytes, rcpt: str) -> None:
    """A bounce arrives with the null sender (RFC 5321 section 4.5.5)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        await client.sendmail("", [rcpt], raw)


def _start(port: int, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KIRIM_DATABASE_URL": database_url,
        "KIRIM_RETURN_PATH": RETURN_PATH,
        "KIRIM_RETURN_PATH_SECRET": SECRET,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [KIRIM, "bounce-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_bounce_server_applies_reports(database_url: str, tmp_path: Path) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url)
        async with live_app(settings) as app:
            sent = await send_and_wait_sent(app, ["missing.person@gmail.example"])
            rid = sent["recipients"][0]["id"]
            port = free_port()
            proc = _start(port, database_url, tmp_path / "out.log")
            db = Database(database_url)
            try:
                await asyncio.to_thread(wait_for_port, port, proc)
                token = make_return_path(RETURN_PATH, sent["id"], rid, SECRET.encode())
                raw = retarget(fixture("gmail.eml"), message=sent, recipient_id=rid)
                # Another domain is not ours to take mail for.
                with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                    await _deliver(port, raw, "postmaster@elsewhere.example")
                await _deliver(port, raw, token)

                async def bounced() -> bool:
                    view = await app.get(sent["id"])
                    return bool(view["recipients"][0]["status"] == "bounced")

                await wait_for(bounced, within=10)
                view = await app.get(sent["id"])
                assert view["recipients"][0]["bounce_category"] == "mailbox_unknown"
                assert (await events_of(db, sent["id"]))[-1]["type"] == "message.bounced"
                assert await suppressed(db) == {"missing.person@gmail.example": "bounce"}
            finally:
                await db.dispose()
                await asyncio.to_thread(stop, proc)
    log = (tmp_path / "out.log").read_text(errors="replace")
    assert "bounce receiver listening" in log, log
