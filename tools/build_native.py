"""Compile the engine's hot modules with mypyc (``make native``), or remove the compiled copies.

A reducer call runs through the modules in ``NATIVE_MODULES``; compiled, the same source costs
a fifth fewer instructions and about 40 % less CPU per call (``loadtest/RESULTS.md``,
"Instructions per transfer"). The ``.py`` files stay the source and work alone: a compiled copy is an
``<module>.cpython-*.so`` beside each one, which Python imports in its place, plus one shared
library for the group inside the package (``hostnode/_native__mypyc.*.so``: inside it, so that
an installed ``orrery`` command, which finds the packages but not the repository's root, loads it).

A compiled copy older than its source would shadow the new code, so the build writes
``build/native/MANIFEST`` (each source's SHA-256): ``make native`` (which ``make run``,
``make test`` and ``make bench`` run first) rebuilds whenever a listed source changed, and
``tests/test_native.py`` fails while the copies do not match the sources. Without mypyc, a C
compiler or Python's headers the build says so in one line, removes any compiled copies and
succeeds: the server then runs as plain Python. A failed compile (code mypyc rejects) leaves
no copy and fails.

    python tools/build_native.py           # build in place, unless the manifest matches
    python tools/build_native.py --clean   # remove every compiled copy and the build files
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The modules a reducer call runs through, the realtime hub that serves WebSocket clients
#: on the same writer thread (64 × 40 confirmed: +9–12 % calls/s, loadtest/RESULTS.md), and what
#: carries their frames to and from the gateway on the node's event loop, which shares the
#: writer's interpreter (the client streams, the split server's link: a third fewer instructions
#: on that loop per call), compiled as one group (calls between them are direct C calls). Adding
#: one: run tests/hostnode and tests/sats with the build in place (compiled code checks
#: annotations at run time and its classes take no patched methods).
NATIVE_MODULES = (
    "hostnode/wasm_host.py",
    "hostnode/datastore.py",
    "hostnode/txdata.py",
    "hostnode/txrecord.py",
    "hostnode/commitlog.py",
    "hostnode/database.py",
    "hostnode/stats.py",
    "hostnode/http_calls.py",
    "hostnode/realtime.py",
    "hostnode/realtime_stream.py",
    "hostnode/grpc_stream.py",
    "hostnode/link.py",
    "proto/link.py",
    "gateway/fast_calls.py",
)
#: C extensions built beside them: wasm_host's crossings into wasmtime (host imports, the call
#: itself) without ctypes, ~35k fewer instructions per transfer (loadtest/RESULTS.md); the
#: datastore's point reads and writes of LMDB keeping the GIL (hostnode/_lmdbfast.c).
C_EXTENSIONS = {"hostnode._hostcall": "hostnode/_hostcall.c", "hostnode._lmdbfast": "hostnode/_lmdbfast.c"}
GROUP = "hostnode._native"
BUILD_DIR = ROOT / "build" / "native"
#: What a complete build leaves: a copy per module, the group's library, each C extension.
EXPECTED_FILES = len(NATIVE_MODULES) + 1 + len(C_EXTENSIONS)
MANIFEST = BUILD_DIR / "MANIFEST"


def source_digests() -> dict[str, str]:
    """Each compiled module's source, by path, as its SHA-256 (what the manifest records)."""
    sources = [*NATIVE_MODULES, *C_EXTENSIONS.values()]
    return {m: hashlib.sha256((ROOT / m).read_bytes()).hexdigest() for m in sources}


def compiled_files() -> list[Path]:
    """Every compiled copy present: the modules' extension files and the group's library."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    names = [ROOT / m.removesuffix(".py") for m in NATIVE_MODULES] + [ROOT / f"{GROUP.replace('.', '/')}__mypyc"]
    names += [ROOT / name.replace(".", "/") for name in C_EXTENSIONS]
    return [p for p in (Path(f"{n}{suffix}") for n in names) if p.exists()]


def remove_copies() -> None:
    """Remove the compiled copies, so the sources are imported again — also those of modules
    no longer listed (a copy left beside its source would shadow it, and fail to load)."""
    for path in compiled_files() + stale_copies():
        path.unlink()


def stale_copies() -> list[Path]:
    """Compiled copies of modules that are not in NATIVE_MODULES any more (beside a source of
    theirs, in a package that has compiled modules)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    listed = {ROOT / m for m in NATIVE_MODULES}
    packages = {(ROOT / m).parent for m in NATIVE_MODULES}
    return [
        p for d in sorted(packages) for p in sorted(d.glob(f"*{suffix}"))
        if (source := p.with_name(p.name.removesuffix(suffix) + ".py")).exists() and source not in listed
    ]  # fmt: skip


def clean() -> None:
    """Remove the compiled copies and the build directory."""
    remove_copies()
    shutil.rmtree(BUILD_DIR, ignore_errors=True)


def missing_toolchain() -> str | None:
    """Why a build cannot run here (no C compiler, no Python headers), or None."""
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed (a dev dependency)"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers ({include}/Python.h)"
    return None


def build() -> int:
    """Compile NATIVE_MODULES in place; on any failure leave no compiled copy behind."""
    clean()
    reason = missing_toolchain()
    if reason is not None:
        print(f"native build skipped: {reason}; the engine runs as plain Python", file=sys.stderr)
        return 0
    BUILD_DIR.mkdir(parents=True)
    started = time.monotonic()
    # setup.py's work in a child process, so that mypyc's and setuptools' state stays out of
    # this one; it writes the C code and objects under BUILD_DIR and the extensions in place.
    script = (
        "from setuptools import Extension, setup; from mypyc.build import mypycify\n"
        f"c = [Extension(n, [s], extra_compile_args=['-O2', '-Wall']) for n, s in {C_EXTENSIONS!r}.items()]\n"
        f"setup(name={GROUP!r}, ext_modules=mypycify({list(NATIVE_MODULES)!r}, group_name={GROUP!r},"
        f" target_dir={str(BUILD_DIR / 'c')!r}) + c, script_args=['-q', 'build_ext', '--inplace',"
        f" '--build-temp', {str(BUILD_DIR / 'obj')!r}])\n"
    )
    log = BUILD_DIR / "build.log"
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        remove_copies()
        print(f"native build failed; the end of {log.relative_to(ROOT)}:", file=sys.stderr)
        sys.stderr.write(_tail(log))
        return 1
    MANIFEST.write_text(json.dumps(manifest(), indent=1, sort_keys=True) + "\n")
    print(
        f"native build: {len(NATIVE_MODULES)} modules compiled with mypyc and {len(C_EXTENSIONS)} C extension"
        f" in {time.monotonic() - started:.0f} s"
    )
    return 0


def _tail(log: Path, lines: int = 20) -> str:
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def up_to_date() -> bool:
    """Whether the compiled copies are there and were built from today's sources by this tool."""
    try:
        built = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False
    return built == manifest() and len(compiled_files()) == EXPECTED_FILES and not stale_copies()


def manifest() -> dict[str, object]:
    """What a build records: the sources' digests, this tool's and mypyc's version (a change
    of either rebuilds too)."""
    tool = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    try:
        mypyc_version = importlib.metadata.version("mypy")
    except importlib.metadata.PackageNotFoundError:
        mypyc_version = None
    return {"sources": source_digests(), "tool": tool, "mypyc": mypyc_version}


def main() -> int:
    """Build unless up to date; with ``--clean`` (or ``ORRERY_NATIVE=0``) remove instead."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled copies and build files")
    args = parser.parse_args()
    if args.clean or os.environ.get("ORRERY_NATIVE", "1") == "0":
        clean()
        if not args.clean:
            print("native build off (ORRERY_NATIVE=0): the engine runs as plain Python")
        return 0
    if up_to_date():
        return 0
    return build()


if __name__ == "__main__":
    sys.exit(main())
