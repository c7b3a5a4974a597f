"""Errors the domain reports about a request; the API turns them into problem+json."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field; ``loc`` is the path into the request body."""

    loc: tuple[str | int, ...]
    msg: str

    @property
    def field(self) -> str:
        return ".".join(str(p) for p in self.loc)


class InvalidRequest(Exception):
    """The request cannot be accepted as given; nothing was stored."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.msg}" for e in errors))
        self.errors = errors
