"""The client SDK and the CLI work with only the base dependencies (`pip install orrery`).

The server's dependencies are the ``server`` extra (pyproject.toml). A child interpreter that
cannot import any of them imports the SDK and every CLI module and runs the CLI; ``orrery
start`` there says which extra to install.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.servers import REPO_ROOT

#: Top-level modules of the server extra's distributions, and the server's own packages.
SERVER_ONLY = (
    "wasmtime", "lmdb", "grpc", "grpc_tools", "google.protobuf", "sqlglot", "jwt", "cryptography", "Crypto",
    "proto", "hostnode", "controlplane", "gateway",
)

#: Imports everything the client installation ships, with the server's modules made unimportable.
CHILD = f"""
import importlib, pkgutil, sys

BLOCKED = {SERVER_ONLY!r}

class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"No module named {{name!r}} (server only)")
        return None

sys.meta_path.insert(0, Block())
import orrery, orrery_client, sats
for package in (orrery_client, sats):
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(package.__name__ + "." + info.name)
for info in pkgutil.iter_modules(orrery.__path__):
    if info.name.startswith("cli"):
        importlib.import_module("orrery." + info.name)
from orrery.cli import main
sys.argv = ["orrery", *sys.argv[1:]]
sys.exit(main())
"""


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_client_and_cli_import_without_the_server_dependencies() -> None:
    proc = _run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "start" in proc.stdout and "subscribe" in proc.stdout


def test_start_without_the_server_names_the_extra() -> None:
    proc = _run_cli("start")
    assert proc.returncode != 0
    assert "pip install 'orrery[server]'" in proc.stderr, proc.stderr


def test_server_dependencies_are_the_server_extra() -> None:
    """The base requirements are the client's alone; the heavy ones sit in the extra."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = {req.split(">")[0].split("=")[0].split("[")[0].lower() for req in project["dependencies"]}
    assert base == {"aiohttp", "blake3", "brotli"}
    server = " ".join(project["optional-dependencies"]["server"]).lower()
    for heavy in ("wasmtime", "lmdb", "grpcio", "protobuf", "sqlglot", "pyjwt", "cryptography", "pycryptodome"):
        assert heavy in server, heavy
    assert "orrery[server]" in project["optional-dependencies"]["dev"]
