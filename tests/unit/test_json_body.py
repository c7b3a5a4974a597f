"""Bodies parse to what ``json.loads`` gives, whichever parser took them."""

from __future__ import annotations

import json

import pytest

from service.api.json_body import loads

SAME = [
    b'{"from": "a@example.org", "to": ["b@example.com"], "n": 1.5, "ok": true, "x": null}',
    '{"subject": "caf\\u00e9 \\ud83d\\ude00 \u00fc"}'.encode(),
    b"[1, -2, 3e5, 0.1, 1e-7, 2.5e+300, 123456789012345678]",
    # orjson refuses these; json.loads takes them, so the answer stays as it was.
    b'{"n": NaN, "m": -Infinity}',
    b'{"big": 123456789012345678901234567890, "small": 18446744073709551615}',
    b'{"neg": -9223372036854775809, "f": 0.12345678901234567890123}',
    b'{"lone": "\\ud800"}',
]


@pytest.mark.parametrize("raw", SAME)
def test_same_objects_as_json_loads(raw: bytes) -> None:
    got, want = loads(raw), json.loads(raw)
    assert repr(got) == repr(want)  # repr: NaN is not equal to itself


@pytest.mark.parametrize("raw", [b'{"a": 1', b"", b"\xff", b'{"a": 1} x'])
def test_invalid_json_raises_what_json_loads_raises(raw: bytes) -> None:
    with pytest.raises(json.JSONDecodeError if raw != b"\xff" else ValueError):
        loads(raw)
