"""The compiled build is used only when built from exactly the source beside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service import native
from service.devtools.build_native import COMPILED

MODULE = "pkg.hot"
SHARED = "pkg.native__mypyc"


def _tree(tmp_path: Path) -> tuple[Path, Path, dict[str, object]]:
    root, build = tmp_path / "src", tmp_path / "build"
    (root / "pkg").mkdir(parents=True)
    source = root / "pkg" / "hot.py"
    source.write_text("def f() -> int:\n    return 1\n")
    for module in (MODULE, SHARED):
        compiled = native.compiled_file(build, module)
        compiled.parent.mkdir(parents=True, exist_ok=True)
        compiled.write_bytes(b"\x7fELF")
    manifest: dict[str, object] = {
        "suffix": native.SUFFIX,
        "shared": SHARED,
        "modules": {MODULE: native.digest(source)},
    }
    return root, build, manifest


def test_a_build_of_the_current_source_is_used(tmp_path: Path) -> None:
    root, build, manifest = _tree(tmp_path)
    files = native.check(manifest, root, build)
    assert files == {
        MODULE: build / "pkg" / f"hot{native.SUFFIX}",
        SHARED: build / "pkg" / f"native__mypyc{native.SUFFIX}",
    }


def test_an_edited_source_turns_the_whole_build_off(tmp_path: Path) -> None:
    root, build, manifest = _tree(tmp_path)
    (root / "pkg" / "hot.py").write_text("def f() -> int:\n    return 2\n")
    assert native.check(manifest, root, build) == "pkg/hot.py changed since the build"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"suffix": ".cpython-399-x.so"}, "built for .cpython-399-x.so"),
        ({"shared": None}, "manifest incomplete"),
        ({"modules": {}}, "manifest incomplete"),
        ({"modules": {"pkg.gone": "0" * 64}}, "pkg/gone.py changed since the build"),
    ],
)
def test_a_build_that_does_not_fit_is_not_used(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    root, build, manifest = _tree(tmp_path)
    assert str(native.check({**manifest, **change}, root, build)).startswith(reason)


def test_a_missing_compiled_file_turns_the_build_off(tmp_path: Path) -> None:
    root, build, manifest = _tree(tmp_path)
    native.compiled_file(build, SHARED).unlink()
    assert native.check(manifest, root, build) == f"missing pkg/native__mypyc{native.SUFFIX}"


def test_install_without_a_manifest_leaves_imports_alone(tmp_path: Path) -> None:
    finders, state = list(sys.meta_path), native.state
    if any(isinstance(f, native.CompiledFinder) for f in finders):
        sys.meta_path[:] = [f for f in finders if not isinstance(f, native.CompiledFinder)]
    try:
        assert native.install({}, root=tmp_path, build=tmp_path / "none") is False
        assert native.state.startswith("no build in")
        assert not any(isinstance(f, native.CompiledFinder) for f in sys.meta_path)
    finally:
        sys.meta_path[:] = finders
        native.state = state


def test_install_with_a_stale_build_leaves_imports_alone(tmp_path: Path) -> None:
    """The real build, its manifest saying one source was different when it was made."""
    manifest = native.read_manifest(native.BUILD)
    assert manifest is not None, native.state
    modules = dict(manifest["modules"])  # type: ignore[call-overload]
    modules["service.domain.mime"] = "0" * 64
    build = tmp_path / "build"
    shutil.copytree(native.BUILD, build)
    (build / native.MANIFEST).write_text(json.dumps({**manifest, "modules": modules}))
    finders, state = list(sys.meta_path), native.state
    sys.meta_path[:] = [f for f in finders if not isinstance(f, native.CompiledFinder)]
    try:
        assert native.install({}, build=build) is False
        assert native.state == (
            "not used: service/domain/mime.py changed since the build; "
            "every module runs from source"
        )
        assert not any(isinstance(f, native.CompiledFinder) for f in sys.meta_path)
    finally:
        sys.meta_path[:] = finders
        native.state = state


def _files_of(modules: list[str], env: dict[str, str]) -> list[str]:
    code = (
        "import importlib, sys\nfor m in sys.argv[1:]: print(importlib.import_module(m).__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *modules], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(os.environ.get(native.SWITCH) == "0", reason="compiled modules switched off")
def test_the_tests_run_the_compiled_modules() -> None:
    """`make test` builds them first: the suite proves the compiled code, as it is run."""
    assert native.state == f"{len(COMPILED)} modules compiled", native.state
    manifest = json.loads((native.BUILD / native.MANIFEST).read_text())
    assert set(manifest["modules"]) == set(COMPILED)
    files = _files_of(list(COMPILED), dict(os.environ))
    assert all(f.endswith(native.SUFFIX) for f in files), files


def test_the_switch_runs_every_module_from_source() -> None:
    files = _files_of(list(COMPILED), {**os.environ, native.SWITCH: "0"})
    assert files == [str(native.source_file(native.ROOT, m)) for m in COMPILED]
