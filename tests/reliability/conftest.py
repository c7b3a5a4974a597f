"""Fixtures for the fault-injection tests: a scripted SMTP server in a thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.smtp_script import Script, ScriptedSmtpServer


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtpServer]:
    """A plaintext scripted server; tests change ``smtp.script`` as they go."""
    with ScriptedSmtpServer(Script()).in_thread() as server:
        yield server
