"""Query-string filters of the message search."""

from __future__ import annotations

import re
from collections.abc import Iterable

_BRACKET = re.compile(r"^metadata\[([A-Za-z0-9_.:-]{1,64})\]$")
_DOTTED = re.compile(r"^meta\.([A-Za-z0-9_.:-]{1,64})$")


def metadata_filters(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``metadata[key]=value`` and ``meta.key=value`` pairs; other parameters are ignored."""
    out: dict[str, str] = {}
    for name, value in params:
        m = _BRACKET.match(name) or _DOTTED.match(name)
        if m:
            out[m.group(1)] = value
    return out
