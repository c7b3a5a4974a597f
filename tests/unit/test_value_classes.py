"""The per-message value classes' written ``__init__`` agrees with their dataclass fields.

They are dataclasses with ``init=False`` and an ``__init__`` of their own, so the compiled
build constructs them natively (see ``service/native.py``). The field list is then written
twice; this catches the two drifting apart: a field left out of ``__init__`` (unset, an
AttributeError later), parameters out of field order (positional construction from rows
would swap values), or a default that differs from the field's.

Checked from source in a fresh interpreter (``KIRIM_NATIVE=0``): compiled constructors check
argument types, and these checks pass stand-in values of any type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CLASSES = [
    "service.db.queue:Claimed",
    "service.db.queue:MessageBody",
    "service.db.queue:Settlement",
    "service.delivery.transport:Reply",
    "service.delivery.transport:Outgoing",
    "service.delivery.transport:RecipientResult",
    "service.delivery.transport:SendResult",
    "service.delivery.smtp_transaction:Progress",
    "service.delivery.smtp_transaction:Envelope",
    "service.delivery.decide:Decision",
    "service.domain.envelope:Recipient",
    "service.domain.envelope:Draft",
    "service.domain.addresses:Address",
    "service.submission:Accepted",
    "service.sending:Planned",
]

_CHILD = """
import dataclasses, importlib, json, sys

problems = []
for spec in sys.argv[1:]:
    module, name = spec.split(":")
    cls = getattr(importlib.import_module(module), name)
    fields = dataclasses.fields(cls)
    if "__init__" not in vars(cls) or cls.__dataclass_params__.init:
        problems.append(f"{name}: no written __init__ (init=False)")
        continue
    # Every field, by position: each lands on its own attribute.
    marks = [object() for _ in fields]
    made = cls(*marks)
    for f, mark in zip(fields, marks):
        if getattr(made, f.name, None) is not mark:
            problems.append(f"{name}.{f.name}: not set from its position")
    # Every field, by keyword.
    made = cls(**{f.name: mark for f, mark in zip(fields, marks)})
    for f, mark in zip(fields, marks):
        if getattr(made, f.name, None) is not mark:
            problems.append(f"{name}.{f.name}: not set from its keyword")
    # Only the required ones: the rest take the field's default.
    required = [f for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    made = cls(*[object() for _ in required])
    for f in fields:
        if f in required:
            continue
        want = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if not hasattr(made, f.name) or getattr(made, f.name) != want:
            problems.append(f"{name}.{f.name}: default differs from the field's")
print(json.dumps(problems))
"""


def test_written_inits_agree_with_the_fields() -> None:
    env = {**os.environ, "KIRIM_NATIVE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *CLASSES],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert json.loads(done.stdout) == []
