"""Settings rendered for people: `deploy/env.example` and the README table stay generated."""

from __future__ import annotations

from pydantic import SecretStr

from service.settings import Settings


def _rows() -> list[tuple[str, str, str]]:
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        if isinstance(default, float) and default.is_integer():
            default = int(default)
        rows.append((f"KIRIM_{name.upper()}", str(default), field.description or ""))
    return rows


def env_example() -> str:
    out = ["# Every Kirim setting with its default. Copy to .env and change what you need.", ""]
    for name, default, description in _rows():
        out.append(f"# {description}")
        out.append(f"{name}={default}")
        out.append("")
    return "\n".join(out)


def markdown_table() -> str:
    out = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, default, description in _rows():
        shown = f"`{default}`" if default else "(empty)"
        cell = description.replace("|", "\\|")
        out.append(f"| `{name}` | {shown} | {cell} |")
    return "\n".join(out) + "\n"


BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"


def with_table(readme: str) -> str:
    """``readme`` with the generated table between the settings markers."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"
