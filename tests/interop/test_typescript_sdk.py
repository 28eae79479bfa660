"""Interop with the official SpacetimeDB 1.12 TypeScript SDK (npm ``spacetimedb@1.12.0``).

``tests/interop/ts`` holds a pinned ``package.json`` + ``package-lock.json``, client bindings for
``modules/quickstart-chat`` written by hand (``module_bindings/``), and ``chat_test.mjs``: two SDK
clients connect to a real ``orrery.standalone``, subscribe, call ``set_name`` / ``send_message``
and check each other's caches and callbacks, then one reconnects with its token (the SDK's
``POST /v1/identity/websocket-token`` + ``?token=`` flow). See that script for every check.

Node and npm are required (``make test`` installs them with apt where missing): without them the
test fails rather than skips. ``npm ci`` runs only when ``package-lock.json`` changed since the
last install into ``ts/node_modules`` (a stamp file there records its hash); when the npm registry
is unreachable, the test fails with npm's own message.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.modules_harness import official_module
from tests.servers import REPO_ROOT, TRANSPORTS, Client, StandaloneServer

TS_DIR = Path(__file__).resolve().parent / "ts"
NODE_MODULES = TS_DIR / "node_modules"
STAMP = NODE_MODULES / ".orrery-npm-ci-stamp"
CHAT_WASM = REPO_ROOT / "modules" / "quickstart-chat" / "quickstart-chat.wasm"
NPM_TIMEOUT = 300.0
NODE_TIMEOUT = 120.0
MIN_NODE_MAJOR = 18  # undici 6 (the SDK's WebSocket on Node < 22) needs Node >= 18.17


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the TypeScript SDK interop test needs Node.js and npm "
            "(`make test` installs the Debian `nodejs` and `npm` packages where `node` is missing; "
            "or install Node >= 18 yourself)",
            pytrace=False,
        )
    return path


def _run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, cwd=TS_DIR, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"`{' '.join(cmd)}` timed out after {timeout:.0f}s\nstdout:\n{out}\nstderr:\n{err}", pytrace=False)


@pytest.fixture(scope="module")
def node() -> str:
    """``node``, checked for version, with ``npm ci`` done in ``tests/interop/ts`` when needed."""
    node = _tool("node")
    npm = _tool("npm")
    version = _run([node, "--version"], timeout=30).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        pytest.fail(f"cannot parse `node --version` output {version!r}", pytrace=False)
    if major < MIN_NODE_MAJOR:
        pytest.fail(f"Node {version} is too old for the TypeScript SDK interop test (need >= {MIN_NODE_MAJOR})")
    lock = hashlib.sha256((TS_DIR / "package-lock.json").read_bytes()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text().strip() == lock):
        proc = _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], timeout=NPM_TIMEOUT)
        if proc.returncode != 0:
            pytest.fail(
                f"`npm ci` in {TS_DIR} failed (exit {proc.returncode}); is the npm registry reachable?\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
                pytrace=False,
            )
        STAMP.write_text(lock + "\n")
    return node


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_quickstart_chat_two_clients(node: str, transport: str, tmp_path: Path) -> None:
    _chat_two_clients(node, transport, tmp_path, CHAT_WASM)


def test_official_rust_quickstart_chat_two_clients(node: str, tmp_path: Path) -> None:
    """The same SDK clients against the official Rust-built module (same schema as ours)."""
    _chat_two_clients(node, "inprocess", tmp_path, official_module("quickstart-chat"))


def _chat_two_clients(node: str, transport: str, tmp_path: Path, wasm: Path) -> None:
    with StandaloneServer(tmp_path / "data", transport=transport) as server:

        async def publish(c: Client) -> None:
            reply = await c.publish("quickstart-chat", wasm.read_bytes())
            assert reply.status == 200, reply

        server.run(publish)
        env = {**os.environ, "NO_COLOR": "1"}
        proc = _run([node, "chat_test.mjs", server.url, "quickstart-chat"], timeout=NODE_TIMEOUT, env=env)
        if proc.returncode != 0:
            pytest.fail(
                f"the TypeScript SDK test failed (exit {proc.returncode})\n"
                f"--- node stdout ---\n{proc.stdout}\n--- node stderr ---\n{proc.stderr}\n"
                f"--- server log ---\n{server.log_text()}",
                pytrace=False,
            )
        assert "PASS" in proc.stdout, proc.stdout
