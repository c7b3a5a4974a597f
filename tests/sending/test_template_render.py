"""The template renderer alone: escaping, strictness, sandbox."""

from __future__ import annotations

import pytest

from service.domain.errors import InvalidRequest
from service.domain.templates import TemplateSource, check_source, render


def test_html_escaped_text_not() -> None:
    src = TemplateSource("Hi {{ name }}", "Hello {{ name }}", "<p>Hello {{ name }}</p>")
    out = render(src, {"name": "<script>x</script>"})
    assert out.subject == "Hi <script>x</script>"
    assert out.text == "Hello <script>x</script>"
    assert out.html == "<p>Hello &lt;script&gt;x&lt;/script&gt;</p>"


def test_missing_variable_named() -> None:
    src = TemplateSource("Hi {{ name }}", "{{ code }}", None)
    with pytest.raises(InvalidRequest) as info:
        render(src, {"name": "a"}, loc=(3,))
    assert [e.field for e in info.value.errors] == ["3.variables.code"]


def test_missing_attribute_is_an_error() -> None:
    src = TemplateSource("x", "{{ user.name }}", None)
    with pytest.raises(InvalidRequest) as info:
        render(src, {"user": {}})
    assert info.value.errors[0].field == "variables"


def test_sandbox_refuses_unsafe_access() -> None:
    src = TemplateSource("x", "{{ ''.__class__.__mro__ }}", None)
    with pytest.raises(InvalidRequest):
        render(src, {})


def test_syntax_error_reported_per_part() -> None:
    errs = check_source(TemplateSource("{{ a", "ok", "{% if %}"))
    assert sorted(e.field for e in errs) == ["html", "subject"]
    assert check_source(TemplateSource("s", None, None))[0].field == "text"
