"""Raw MIME checks alone: normalisation and refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.domain.errors import InvalidRequest
from service.domain.raw import normalise

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _norm(data: bytes) -> bytes:
    return normalise(data, message_id="<x@k>", date=NOW, max_bytes=10_000).mime


def test_kept_as_given_when_complete() -> None:
    data = (
        b"From: a@example.com\r\nDate: Fri, 2 Jan 2026 00:00:00 +0000\r\n"
        b"Message-ID: <m@a>\r\n\r\nhi\r\n"
    )
    out = normalise(data, message_id="<x@k>", date=NOW, max_bytes=10_000)
    assert out.mime == data and out.message_id == "<m@a>"


def test_lf_becomes_crlf_and_missing_headers_added() -> None:
    out = _norm(b"From: a@example.com\nSubject: s\n\nline1\nline2")
    assert out == (
        b"Message-ID: <x@k>\r\nDate: Fri, 02 Jan 2026 03:04:05 +0000\r\n"
        b"From: a@example.com\r\nSubject: s\r\n\r\nline1\r\nline2\r\n"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"From: a@example.com\r\n\r\nnul\x00here\r\n",
        b"From: a@example.com\r\n\r\nbare\rcr\r\n",
        b"From: a@example.com\r\n\r\n" + b"x" * 999 + b"\r\n",
        b"Subject: no from\r\n\r\nbody\r\n",
        b"just some text\r\n",
        b"From: a@example.com\r\nbroken header line\r\n\r\nbody\r\n",
    ],
)
def test_refused(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        _norm(data)
    assert info.value.errors[0].field == "raw"
