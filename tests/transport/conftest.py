"""Fixtures for the SMTP transport tests (and `tests.support` on sys.path)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from service.delivery.smtp import SmtpTransport  # noqa: E402
from service.delivery.smtp_url import SmtpTarget, SmtpTimeouts  # noqa: E402
from tests.support.smtp_script import ScriptedSmtpServer  # noqa: E402
from tests.transport.smtp_helpers import FAST, MakeTransport  # noqa: E402


@pytest.fixture(autouse=True, params=[True, False], ids=["pipelined", "stepwise"])
def pipelining(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every transport test runs against servers with and without PIPELINING (RFC 2920)."""
    monkeypatch.setattr(ScriptedSmtpServer, "offer_pipelining", request.param)
    return bool(request.param)


@pytest.fixture
async def make_transport() -> AsyncIterator[MakeTransport]:
    """Build transports from URLs; every one is closed after the test."""
    made: list[SmtpTransport] = []

    def make(url: str, timeouts: SmtpTimeouts = FAST, **kwargs: object) -> SmtpTransport:
        transport = SmtpTransport(SmtpTarget.parse(url), timeouts, **kwargs)  # type: ignore[arg-type]
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.aclose()
