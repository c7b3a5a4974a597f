"""`kirim worker` as an operator runs it: the bounce mailbox poller lives in that process."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.bounces import parse_report
from tests.bounces.servers import Dovecot
from tests.bounces_e2e.conftest import (
    RETURN_PATH,
    SECRET,
    bounce_settings,
    fixture,
    retarget,
    send_and_wait_sent,
)
from tests.support.app import live_app, wait_for
from tests.support.process import KirimProcess, kirim_env
from tests.support.smtpd import RecordingSmtpServer


async def test_worker_process_polls_imap(
    database_url: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    with RecordingSmtpServer() as smtp:
        settings = bounce_settings(database_url, smtp.url)
        async with live_app(settings) as app:
            sent = await send_and_wait_sent(app, ["slow@far.example.org"])
            rid = sent["recipients"][0]["id"]
            env = kirim_env(
                database_url=database_url,
                smtp_url=smtp.url,
                return_path=RETURN_PATH,
                return_path_secret=SECRET,
                bounce_mailbox_url=dovecot.url("imap", "?tls=none"),
                bounce_poll_interval=0.2,
                bounce_processed_folder="Done",
                bounce_unmatched_folder="Unknown",
            )
            worker = KirimProcess(env, "worker", log=tmp_path / "worker.log")
            await asyncio.to_thread(worker.start)
            try:
                report = retarget(fixture("dsn_delayed.eml"), message=sent, recipient_id=rid)
                dovecot.deliver(report)
                dovecot.deliver(fixture("autoreply.eml"))

                async def sorted_out() -> bool:
                    done, unknown = dovecot.messages("Done"), dovecot.messages("Unknown")
                    return len(done) == 1 and len(unknown) == 1 and dovecot.messages() == []

                await wait_for(sorted_out, within=30)
                view = await app.get(sent["id"])
                assert view["recipients"][0]["status"] == "sent"  # a delay changes no state
                assert [e["type"] for e in view["events"]][-1] == "message.delayed"
                [done] = dovecot.messages("Done")
                assert (
                    parse_report(done).report_message_id == parse_report(report).report_message_id
                )
            finally:
                code = await asyncio.to_thread(worker.stop)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert "bounce mailbox poller stopped" in log, log[-3000:]
