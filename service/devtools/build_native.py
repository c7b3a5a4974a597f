"""``python -m service.devtools.build_native``: compile the hot pure modules with mypyc.

The modules below do most of the Python work of an accept and of an SMTP delivery and take
only what their annotations say. Compiled into ``build/native`` (with a manifest of their
sources' SHA-256), they are loaded instead of the sources by ``service.native`` as long as
the sources are unchanged. Adding a module here needs its tests to pass compiled: mypyc
checks annotated types at run time, and calls between compiled modules bypass any
monkeypatching of module attributes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from service.native import (
    BUILD,
    MANIFEST,
    ROOT,
    SUFFIX,
    check,
    digest,
    read_manifest,
    source_file,
)

COMPILED = (
    "service.domain.addresses",
    "service.domain.envelope",
    "service.domain.ids",
    "service.domain.mime",
    "service.submission",
    "service.sending",
    "service.logs",
    "service.observability.logging",
    "service.observability.event_lines",
    "service.observability.record",
    "service.observability.tracing",
    "service.delivery.transport",
    "service.delivery.slots",
    "service.delivery.smtp_session",
    "service.delivery.smtp_transaction",
    "service.delivery.smtp_wire",
    "service.delivery.smtp",
    "service.delivery.together",
    "service.delivery.worker",
    "service.delivery.decide",
    "service.db.queue",
    "service.db.plain_statement",
    "service.db.plain_insert",
    "service.db.event_seq",
)
GROUP = "service.native"  # the compiled code's shared library: service.native__mypyc


def up_to_date(build_dir: Path = BUILD) -> bool:
    manifest = read_manifest(build_dir)
    if manifest is None:
        return False
    modules = manifest.get("modules")
    return (
        isinstance(modules, dict)
        and set(modules) == set(COMPILED)
        and not isinstance(check(manifest, ROOT, build_dir), str)
    )


def build(build_dir: Path = BUILD) -> None:
    if up_to_date(build_dir):
        print(f"{build_dir} is up to date", file=sys.stderr)
        return
    from mypyc.build import mypycify
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    sources = {module: source_file(ROOT, module) for module in COMPILED}
    digests = {module: digest(path) for module, path in sources.items()}
    os.chdir(ROOT)  # mypy reads its settings (plugins) from pyproject.toml here
    with tempfile.TemporaryDirectory(prefix="kirim-native-") as tmp:
        work = Path(tmp)
        extensions = mypycify(
            [str(path.relative_to(ROOT)) for path in sources.values()],
            group_name=GROUP,
            target_dir=str(work / "c"),
        )
        command = build_ext(Distribution({"name": "kirim-native", "ext_modules": extensions}))
        command.build_lib = str(work / "native")
        command.build_temp = str(work / "objects")
        command.ensure_finalized()
        command.run()
        if {m: digest(p) for m, p in sources.items()} != digests:
            raise SystemExit("sources changed during the build; run it again")
        manifest = {"suffix": SUFFIX, "shared": f"{GROUP}__mypyc", "modules": digests}
        (work / "native" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / "native"), build_dir)
    print(f"compiled {len(COMPILED)} modules into {build_dir}", file=sys.stderr)


if __name__ == "__main__":
    build()
