"""Rendering stored templates: Jinja2 in a sandbox, strict about missing variables.

Pure code. Subject and text render without escaping; html autoescapes, so a variable can
never inject markup. A variable the template uses but the request lacks is a field error
(``variables.<name>``) before anything is rendered: no half-rendered email ever goes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from service.domain.errors import FieldError, InvalidRequest

_PLAIN = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
PARTS = ("subject", "text", "html")
MAX_SOURCE_CHARS = 512 * 1024


@dataclass(frozen=True, slots=True)
class TemplateSource:
    subject: str
    text: str | None
    html: str | None


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str | None
    html: str | None


def _env(part: str) -> SandboxedEnvironment:
    return _HTML if part == "html" else _PLAIN


def check_source(src: TemplateSource, loc: tuple[str | int, ...] = ()) -> list[FieldError]:
    """Syntax errors of each part, so a broken template is refused when it is saved."""
    errors: list[FieldError] = []
    if src.text is None and src.html is None:
        errors.append(FieldError((*loc, "text"), "text or html is required"))
    for part in PARTS:
        source = getattr(src, part)
        if source is None:
            continue
        if len(source) > MAX_SOURCE_CHARS:
            errors.append(FieldError((*loc, part), f"at most {MAX_SOURCE_CHARS} characters"))
            continue
        try:
            _env(part).parse(source)
        except TemplateError as exc:
            errors.append(FieldError((*loc, part), f"template syntax error: {exc}"))
    return errors


def variables_used(src: TemplateSource) -> set[str]:
    names: set[str] = set()
    for part in PARTS:
        source = getattr(src, part)
        if source is not None:
            names |= meta.find_undeclared_variables(_env(part).parse(source))
    return names


def render(
    src: TemplateSource, variables: Mapping[str, Any], loc: tuple[str | int, ...] = ()
) -> Rendered:
    """Render every part; raises ``InvalidRequest`` naming each missing variable."""
    missing = sorted(variables_used(src) - set(variables))
    if missing:
        raise InvalidRequest(
            [FieldError((*loc, "variables", n), "missing template variable") for n in missing]
        )
    out: dict[str, str | None] = {}
    errors: list[FieldError] = []
    for part in PARTS:
        source = getattr(src, part)
        if source is None:
            out[part] = None
            continue
        try:
            out[part] = _env(part).from_string(source).render(dict(variables))
        except TemplateError as exc:
            # e.g. an attribute of a variable that is missing, or a sandbox refusal.
            errors.append(FieldError((*loc, "variables"), f"{part}: {exc}"))
    if errors:
        raise InvalidRequest(errors)
    return Rendered(subject=out["subject"] or "", text=out["text"], html=out["html"])
