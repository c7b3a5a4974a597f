from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bounces.servers import Dovecot, start_dovecot, stop_dovecot

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = b"test-bounce-secret"
BASE = "bounces@mail.example.com"
MESSAGE_ID = "msg_01JD8Y3Q6V0WZ5K2N4P7R9T1XA"
RECIPIENT_ID = "rcp_01JD8Y3Q6V7B2C3D4E5F6G7H8J"
ORIGINAL_MESSAGE_ID = f"<{MESSAGE_ID}@mail.example.com>"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    try:
        yield server
    finally:
        stop_dovecot(server)


@pytest.fixture
def client_tls(dovecot: Dovecot) -> ssl.SSLContext:
    context = ssl.create_default_context()
    dovecot.ca.configure_trust(context)
    return context
