"""The compiled engine (``make native``, tools/build_native.py) is the one imported, and current.

When the build ran, each hot module must be imported from its compiled copy (else the build
gains nothing), and every copy must have been built from the source beside it (a stale copy
shadows the source: the server would run yesterday's code while its tests read today's). A tree
without a build (``NATIVE=0``, no C compiler) has nothing to check.
"""

from __future__ import annotations

import importlib
import json
import sysconfig
from pathlib import Path

import pytest

from tools.build_native import (
    C_EXTENSIONS,
    EXPECTED_FILES,
    MANIFEST,
    NATIVE_MODULES,
    compiled_files,
    source_digests,
    stale_copies,
)

pytestmark = pytest.mark.skipif(not MANIFEST.exists(), reason="no native build here (make native)")


def test_the_compiled_copies_match_their_sources() -> None:
    built = json.loads(MANIFEST.read_text())
    stale = [m for m, digest in source_digests().items() if built["sources"].get(m) != digest]
    assert not stale, f"compiled copies older than their sources (run `make native`): {stale}"
    assert len(compiled_files()) == EXPECTED_FILES, "a compiled copy is missing (run `make native`)"
    assert not stale_copies(), "compiled copies of modules no longer compiled shadow their sources (run `make native`)"


@pytest.mark.parametrize("path", NATIVE_MODULES)
def test_each_hot_module_is_imported_compiled(path: str) -> None:
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert module.__file__ is not None and module.__file__.endswith(suffix), module.__file__


@pytest.mark.parametrize("name", sorted(C_EXTENSIONS))
def test_each_c_extension_is_imported(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None and module.__file__.endswith(sysconfig.get_config_var("EXT_SUFFIX"))


def test_the_module_host_uses_the_c_crossings() -> None:
    from hostnode import wasm_host

    assert wasm_host.HOSTCALL is not None, "hostnode._hostcall is built but wasm_host does not use it"


def test_copies_of_modules_no_longer_compiled_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import build_native

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("kept.py", f"kept{suffix}", "dropped.py", f"dropped{suffix}", "ext.c", f"ext{suffix}", f"lib{suffix}"):
        (pkg / name).write_text("")
    monkeypatch.setattr(build_native, "ROOT", tmp_path)
    monkeypatch.setattr(build_native, "NATIVE_MODULES", ("pkg/kept.py",))
    monkeypatch.setattr(build_native, "C_EXTENSIONS", {"pkg.ext": "pkg/ext.c"})
    assert stale_copies() == [pkg / f"dropped{suffix}"]  # not the C extension, nor a library without a source
