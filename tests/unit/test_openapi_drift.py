"""openapi/openapi.json is generated from the code; regenerate with `kirim openapi`."""

from __future__ import annotations

from pathlib import Path

from service.api.openapi import render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert COMMITTED.read_text() == render(), (
        "openapi/openapi.json is stale: run `.venv/bin/kirim openapi` and commit the result"
    )
