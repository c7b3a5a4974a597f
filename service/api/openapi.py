"""The committed OpenAPI document is generated from the code; a test fails on drift."""

from __future__ import annotations

import json

from service.api.app import create_app
from service.settings import Settings


def render() -> str:
    app = create_app(Settings(), run_workers=False)
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
