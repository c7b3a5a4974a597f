"""How the Kirim processes of a run are arranged: ``kirim serve`` as an operator starts it
on one node, or a scale-out layout of API-only and worker-only processes on PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    apis: int = 1  # HTTP API processes, each on its own port
    workers: int = 0  # `kirim worker` processes; 0: `kirim serve` starts its own delivery

    @property
    def scale_out(self) -> bool:
        return self.workers > 0

    @property
    def name(self) -> str:
        """As given to ``--layout``."""
        return f"{self.apis}x{self.workers}" if self.scale_out else "serve"

    @property
    def label(self) -> str:
        """What a result row says about the layout ("" for the default one)."""
        return f"{self.apis} API + {self.workers} worker" if self.scale_out else ""


SERVE = Layout()
_SCALE_OUT = re.compile(r"([1-9][0-9]?)x([1-9][0-9]?)")


def parse_layout(text: str) -> Layout:
    """``serve``, or ``NxM``: N ``kirim serve --no-workers`` and M ``kirim worker``."""
    if text == "serve":
        return SERVE
    found = _SCALE_OUT.fullmatch(text)
    if found is None:
        raise ValueError(f"layout {text!r} is neither 'serve' nor NxM (e.g. 2x2)")
    return Layout(apis=int(found[1]), workers=int(found[2]))
