"""Compiled builds of the hot modules, used only when built from exactly the source here.

``make install`` compiles the pure modules of the accept and delivery paths with mypyc
(``tools/build_native.py``) into ``build/native``, with a manifest of each source file's
SHA-256. Compiled, the same code runs in fewer instructions.

The value classes built once or more per message (a claimed recipient, its body, an SMTP
reply, a draft, …) are slotted dataclasses with an ``__init__`` of their own
(``init=False``), not frozen. A dataclass's generated ``__init__`` is Python made at import,
so it runs interpreted even in a compiled class (about 0.5 µs for seven fields, called by
keyword); a written one is compiled (0.05 µs). A frozen one is worse still: it sets each
field through ``object.__setattr__``. Equality, ``repr`` and ``dataclasses.replace`` stay
the dataclass's. The objects are still treated as values and never changed after creation.

The build never sits next to the sources, so an edited module is never shadowed by a stale
build: ``install`` (run when ``service`` is first imported) uses the compiled modules only if
every one was built from its current source for this interpreter, and otherwise, or with
``KIRIM_NATIVE=0``, every module runs from source. All or none, because the compiled modules
of one build call each other directly.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "native"
MANIFEST = "manifest.json"
SWITCH = "KIRIM_NATIVE"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

# What ``install`` found, for the startup log line.
state = "not checked"


def source_file(root: Path, module: str) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_file(build: Path, module: str) -> Path:
    return build.joinpath(*module.split(".")).with_suffix(SUFFIX)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(build: Path) -> dict[str, object] | None:
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check(manifest: Mapping[str, object], root: Path, build: Path) -> dict[str, Path] | str:
    """Each compiled module's file, if the build fits this tree and interpreter; else why not."""
    modules, shared = manifest.get("modules"), manifest.get("shared")
    if manifest.get("suffix") != SUFFIX:
        return f"built for {manifest.get('suffix')}, not {SUFFIX}"
    if not isinstance(modules, dict) or not modules or not isinstance(shared, str):
        return "manifest incomplete"
    files = {shared: compiled_file(build, shared)}
    for module, sha in modules.items():
        source = source_file(root, module)
        if not source.is_file() or digest(source) != sha:
            return f"{source.relative_to(root)} changed since the build"
        files[module] = compiled_file(build, module)
    missing = [str(f.relative_to(build)) for f in files.values() if not f.is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    return files


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules in the build; leaves every other import alone."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install(environ: Mapping[str, str], root: Path = ROOT, build: Path = BUILD) -> bool:
    """Put the compiled modules first in line for import, if usable; True if they are."""
    global state
    if any(isinstance(f, CompiledFinder) for f in sys.meta_path):
        return True
    if environ.get(SWITCH, "1") == "0":
        state = f"off ({SWITCH}=0)"
        return False
    manifest = read_manifest(build)
    if manifest is None:
        state = f"no build in {build} (make install builds it)"
        return False
    found = check(manifest, root, build)
    if isinstance(found, str):
        state = f"not used: {found}; every module runs from source"
        return False
    sys.meta_path.insert(0, CompiledFinder(found))
    state = f"{len(found) - 1} modules compiled"
    return True
