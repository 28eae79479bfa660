"""The CLI against a real standalone Orrery (``tests/servers.py``): the quickstart-chat flow, and a
second identity refused on the first one's database with one-line errors."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Result, run_cli
from tests.gateway.test_ws_republish import doc_module

try:
    from tests.servers import REPO_ROOT, StandaloneServer
except ImportError:  # pragma: no cover - only while the helper does not exist yet
    pytest.skip("tests/servers.py (the standalone server helper) is missing", allow_module_level=True)

WASM = REPO_ROOT / "modules" / "quickstart-chat" / "quickstart-chat.wasm"
HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    """One standalone server for the module's tests."""
    with StandaloneServer(tmp_path_factory.mktemp("orrery") / "data") as server:
        yield server


def cli(config: Path, *argv: str, stdin: str = "") -> Result:
    return run_cli("--config", str(config), *argv, stdin=stdin)


def ok(config: Path, *argv: str) -> Result:
    r = cli(config, *argv)
    assert r.code == 0, f"orrery {' '.join(argv)} failed: {r.err}"
    return r


def refused(config: Path, *argv: str) -> str:
    """Run a command that must fail; return its single error line."""
    r = cli(config, *argv)
    assert r.code != 0, r.out
    return r.error_line


def setup_user(live: StandaloneServer, config: Path) -> str:
    """Save the live server as default and log in; returns the identity."""
    ok(config, "server", "add", "live", live.url, "--default")
    ok(config, "login")
    shown = ok(config, "login", "show").out
    match = HEX64.search(shown)
    assert match, shown
    return match.group(0)


def test_quickstart_chat_flow(live: StandaloneServer, tmp_path: Path) -> None:
    alice = tmp_path / "alice.toml"
    me = setup_user(live, alice)
    name = f"chat-{uuid.uuid4().hex[:8]}"

    out = ok(alice, "publish", "--bin-path", str(WASM), name).out.splitlines()
    assert out[-1].startswith(f"Created new database with name: {name}, identity: ")
    db = out[-1].rsplit(" ", 1)[1]
    assert HEX64.fullmatch(db)

    ok(alice, "call", name, "set_name", "Alice")
    ok(alice, "call", name, "send_message", "Hello, Orrery!")
    assert "Messages must not be empty" in refused(alice, "call", name, "send_message", "")
    assert refused(alice, "call", name, "no_such").startswith("Error: No such reducer OR procedure `no_such`")

    users = ok(alice, "sql", name, "SELECT * FROM user").out.splitlines()
    assert users[0].split("|")[0].strip() == "identity" and [c.strip() for c in users[0].split("|")] == [
        "identity",
        "name",
        "online",
    ]
    assert set(users[1]) <= {"-", "+"}
    assert [c.strip() for c in users[2].split("|")] == [f"0x{me}", '(some = "Alice")', "false"]
    messages = ok(alice, "sql", name, "SELECT sender, text FROM message").out.splitlines()
    assert [c.strip() for c in messages[2].split("|")] == [f"0x{me}", '"Hello, Orrery!"']
    empty = ok(alice, "sql", name, "SELECT * FROM message WHERE text = 'nothing'").out
    assert empty.splitlines()[0].split("|")[0].strip() == "sender" and len(empty.splitlines()) == 2
    assert "no such table" in refused(alice, "sql", name, "SELECT * FROM nope")

    logs = ok(alice, "logs", name).out
    assert re.search(r"^\S+Z  INFO: send_message \S+:\d+: User [0-9a-f]{64}: Hello, Orrery!$", logs, re.M), (
        logs
    )
    assert len(ok(alice, "logs", name, "-n", "1").out.splitlines()) == 1
    raw = ok(alice, "logs", name, "--format", "json", "-n", "2").out.splitlines()
    assert all(json.loads(line)["level"] for line in raw)

    schema = json.loads(ok(alice, "describe", name, "--json").out)
    assert {r["name"] for r in schema["reducers"]} >= {"set_name", "send_message", "init"}
    summary = ok(alice, "describe", name).out
    assert "  send_message(text: String)" in summary.splitlines()

    updated = f"Updated database with name: {name}, identity: {db}"
    assert ok(alice, "publish", "-b", str(WASM), name).out.splitlines()[-1] == updated
    assert ok(alice, "publish", "-c", "-y", "-b", str(WASM), name).out.splitlines()[-1] == updated
    assert (
        ok(alice, "publish", "-b", str(WASM), db).out.splitlines()[-1]
        == f"Updated database with identity: {db}"
    )
    assert len(ok(alice, "sql", name, "SELECT * FROM message").out.splitlines()) == 2  # cleared

    renamed = f"{name}-2"
    assert ok(alice, "rename", "--to", renamed, name).out == f"Name set to {renamed} for identity {name}.\n"
    ok(alice, "call", renamed, "send_message", "after rename")
    assert db in ok(alice, "list").out

    unnamed = ok(alice, "publish", "-b", str(WASM)).out.splitlines()[-1]
    assert re.fullmatch(r"Created new database with identity: [0-9a-f]{64}", unnamed)

    ok(alice, "delete", renamed)
    assert refused(alice, "sql", db, "SELECT * FROM user").startswith("Error: ")
    assert db not in ok(alice, "list").out


def test_second_identity_is_refused(live: StandaloneServer, tmp_path: Path) -> None:
    alice, mallory = tmp_path / "alice.toml", tmp_path / "mallory.toml"
    setup_user(live, alice)
    setup_user(live, mallory)
    name = f"owned-{uuid.uuid4().hex[:8]}"
    ok(alice, "publish", "-b", str(WASM), name)
    ok(alice, "call", name, "set_name", "Alice")

    for argv, reason in (
        (("delete", name), "delete database"),
        (("rename", "--to", f"{name}-stolen", name), "owned by another identity"),
        (("logs", name), "view module logs"),
        (("sql", name, "DELETE FROM user"), "not authorized to run SQL DML"),
        (("sql", name, "UPDATE user SET online = true"), "not authorized to run SQL DML"),
        (("publish", "-b", str(WASM), name), "update database"),
        (("publish", "-c", "-y", "-b", str(WASM), name), "update database"),
    ):
        line = refused(mallory, *argv)
        assert reason in line, (argv, line)
    # Reading public tables is allowed, and nothing changed.
    rows = ok(mallory, "sql", name, "SELECT name, online FROM user").out.splitlines()
    assert [c.strip() for c in rows[2].split("|")] == ['(some = "Alice")', "false"]
    assert "No databases found" in ok(mallory, "list").out
    # The owner may do what the other identity may not.
    assert ok(alice, "sql", name, "UPDATE user SET online = true").out == "\n"
    rows = ok(alice, "sql", name, "SELECT online FROM user").out.splitlines()
    assert rows[2].strip() == "true"
    ok(alice, "rename", "--to", f"{name}-mine", name)
    ok(alice, "delete", f"{name}-mine")


def test_publish_asks_before_breaking_clients(live: StandaloneServer, tmp_path: Path) -> None:
    """A republish changing the row-level-security rules disconnects the clients: the CLI shows
    the plan and publishes only with the user's consent (the server checks the token)."""
    config = tmp_path / "c.toml"
    setup_user(live, config)
    name = f"rls-{uuid.uuid4().hex[:8]}"
    old, new = tmp_path / "old.wasm", tmp_path / "new.wasm"
    old.write_bytes(doc_module("SELECT * FROM doc WHERE doc.v = 1"))
    new.write_bytes(doc_module("SELECT * FROM doc WHERE doc.v = 2"))
    ok(config, "publish", "-b", str(old), name)

    r = cli(config, "publish", "-b", str(new), name, stdin="n\n")
    assert r.code == 1 and r.error_line == "Error: Publishing aborted by user"
    assert "- add row-level security rule `SELECT * FROM doc WHERE doc.v = 2`" in r.out
    assert "The above changes will BREAK existing clients. Do you want to proceed? [y/N]" in r.out
    schema = json.loads(ok(config, "describe", name, "--json").out)
    assert schema["row_level_security"] == [{"sql": "SELECT * FROM doc WHERE doc.v = 1"}]

    out = ok(config, "publish", "--break-clients", "-b", str(new), name).out
    assert out.splitlines()[-1].startswith(f"Updated database with name: {name}, identity: ")
    schema = json.loads(ok(config, "describe", name, "--json").out)
    assert schema["row_level_security"] == [{"sql": "SELECT * FROM doc WHERE doc.v = 2"}]

    # An update that needs a manual migration (table doc would go) stops before publishing.
    assert refused(config, "publish", "-y", "-b", str(WASM), name).startswith(
        "Error: Aborting because publishing would require manual migration"
    )


def test_logs_follow_streams_new_lines(live: StandaloneServer, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    setup_user(live, config)
    name = f"follow-{uuid.uuid4().hex[:8]}"
    ok(config, "publish", "-b", str(WASM), name)
    ok(config, "call", name, "send_message", "before")
    # SIGINT as a terminal sends it, whatever this run inherited: a suite started in the
    # background of a non-interactive shell ignores SIGINT, and so would the child. The child
    # resets it itself and then becomes the CLI (same pid): a preexec_fn would run Python
    # between fork and exec of this process, whose gRPC threads (earlier tests') make that
    # unsafe — a child stuck there is an `orrery logs -f` that never prints.
    reset_then_exec = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", reset_then_exec, "-m", "orrery.cli", "--config", str(config), "logs", "-f", name],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise AssertionError(f"`orrery logs -f` did not print {text!r}")

    try:
        assert wait_for(": before").rstrip().endswith(": before")  # the recent past first
        ok(config, "call", name, "send_message", "streamed")
        assert " INFO: send_message " in wait_for(": streamed")
        assert proc.poll() is None  # still following
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    assert code == 130
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_unknown_database_and_stopped_server(live: StandaloneServer, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    setup_user(live, config)
    assert refused(config, "sql", "no-such-db", "SELECT 1") == "Error: failed to find database `no-such-db`."
    assert refused(config, "sql", "-s", "http://127.0.0.1:9", "x", "SELECT 1").startswith(
        "Error: cannot connect to the server at http://127.0.0.1:9"
    )


def _orrery_script() -> Path:
    return Path(sys.executable).parent / "orrery"


@pytest.mark.skipif(
    not _orrery_script().exists(), reason="the orrery console script is not installed in this venv"
)
@pytest.mark.parametrize("transport", ["inprocess", "split"])
def test_installed_entry_point_start_and_publish(tmp_path: Path, transport: str) -> None:
    """``orrery start`` in a subprocess (one process, or split in two), then the installed
    ``orrery`` script against it; SIGTERM stops it cleanly."""
    env = {**os.environ, "ORRERY_CONFIG": str(tmp_path / "cli.toml"), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [str(_orrery_script()), "start", "--listen-addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--transport", transport],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "orrery start did not report its address"

        def orrery(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(_orrery_script()), *argv], capture_output=True, text=True, env=env, timeout=60
            )

        r = orrery("publish", "-s", url, "-b", str(WASM), "entry")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1].startswith("Created new database with name: entry, identity: ")
        r = orrery("sql", "-s", url, "entry", "SELECT * FROM message")
        assert (r.returncode, r.stdout.splitlines()[0].split()) == (0, ["sender", "|", "sent", "|", "text"])
        r = orrery("delete", "-s", url, "nope-nope")
        assert r.returncode == 1 and r.stderr.strip() == "Error: failed to find database `nope-nope`."
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
