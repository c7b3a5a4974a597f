"""deploy/env.example and the README settings table list every setting (`kirim config --write`)."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.settings_doc import env_example, with_table

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_is_current() -> None:
    assert (ROOT / "deploy" / "env.example").read_text() == env_example(), (
        "run `.venv/bin/kirim config --write`"
    )


def test_readme_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme == with_table(readme), "run `.venv/bin/kirim config --write`"


def test_every_setting_has_a_description() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert not missing
