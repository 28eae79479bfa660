"""The standalone process itself: restarts keep everything, limits are configurable, quickstart works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orrery import standalone
from tests.gateway.conftest import CHAT
from tests.servers import Client, StandaloneServer


@pytest.mark.parametrize("transport_", ["inprocess", "grpc"])
def test_errors_in_the_server_are_not_chained_to_the_event_loop_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport_: str
) -> None:
    """Whether uvloop imports or not, the server's exceptions (and so every traceback it logs)
    carry no context from that choice (issue 12: ``ModuleNotFoundError: No module named 'uvloop'``
    was chained to every logged error)."""

    async def failing_serve(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a failure inside the server")

    monkeypatch.setattr(standalone, "serve", failing_serve)
    with pytest.raises(RuntimeError, match="a failure inside the server") as failure:
        standalone.run("127.0.0.1:0", tmp_path, transport=transport_)
    assert failure.value.__context__ is None and failure.value.__cause__ is None


def test_restart_keeps_databases_names_identities_and_data(tmp_path: Path, transport: str) -> None:
    server = StandaloneServer(
        tmp_path / "data", args=["--max-module-bytes", "30000", "--max-body-bytes", "64"], transport=transport
    )
    with server:
        state: dict[str, str] = {}

        async def before(c: Client) -> None:
            ident, token = await c.new_identity()
            state.update(ident=ident, token=token)
            created = await c.publish("chat", CHAT, token=token)
            state["db"] = created.json()["Success"]["database_identity"]
            assert (await c.call("chat", "set_name", "Alice", token=token)).status == 200
            assert (await c.call("chat", "send_message", "before restart", token=token)).status == 200
            assert (await c.post("/v1/database/chat/names", data="chat-alias", token=token)).status == 200
            # Configured limits: 64-byte bodies, 30000-byte modules (quickstart-chat is ~24 KB).
            big_sql = await c.sql("chat", "SELECT * FROM message WHERE text = '" + "x" * 80 + "'")
            assert big_sql.status == 413 and big_sql.text.startswith("Request body too large")
            big_module = await c.publish("too-big", CHAT + b"\0" * 10_000, token=token)
            assert big_module.status == 413

        server.run(before)
        server.restart()

        async def after(c: Client) -> None:
            token, db = state["token"], state["db"]
            # The signing key survived: the old token still verifies and still owns the database.
            assert (await c.get(f"/v1/identity/{state['ident']}/verify", token=token)).status == 204
            assert (await c.get("/v1/database/chat/identity")).text == db
            assert (await c.get("/v1/database/chat-alias/identity")).text == db
            assert (await c.get(f"/v1/identity/{state['ident']}/databases")).json() == {"identities": [db]}
            users = await c.rows("chat", "SELECT * FROM user")
            assert [u[1] for u in users] == [[0, "Alice"]]
            assert [m[2] for m in await c.rows("chat", "SELECT * FROM message")] == ["before restart"]
            logs = await c.get("/v1/database/chat/logs", token=token)
            assert "before restart" in logs.text
            # Republishing after a restart is an update, and calls keep working.
            again = await c.publish("chat", CHAT, token=token)
            assert again.json()["Success"]["op"] == "updated"
            assert (await c.call("chat", "send_message", "after restart", token=token)).status == 200
            assert len(await c.rows("chat", "SELECT * FROM message")) == 2

        server.run(after)
    assert "level=error" not in server.log_text()


def test_kill_and_restart_keeps_acknowledged_writes(tmp_path: Path, transport: str) -> None:
    server = StandaloneServer(tmp_path / "data", transport=transport)
    server.start()
    try:
        async def write(c: Client) -> str:
            _, token = await c.new_identity()
            await c.publish("chat", CHAT, token=token)
            for i in range(5):
                assert (await c.call("chat", "send_message", f"m{i}", token=token)).status == 200
            return token

        server.run(write)
        server.kill()  # no clean shutdown: every answered call must still be there
        server.start()

        async def check(c: Client) -> None:
            assert sorted(m[2] for m in await c.rows("chat", "SELECT * FROM message")) == [f"m{i}" for i in range(5)]

        server.run(check)
    finally:
        server.kill()


def _children(pid: int) -> list[str]:
    """The command lines of ``pid``'s child processes."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").decode() for k in kids]


def test_quickstart_publishes_and_restarts_as_update(tmp_path: Path) -> None:
    data = tmp_path / "data"
    quickstart = StandaloneServer(data, module="orrery.quickstart")
    with quickstart:
        text = quickstart.wait_for_output("Press Ctrl-C")
        token = (data / "quickstart.token").read_text().strip()
        assert (data / "quickstart.token").stat().st_mode & 0o777 == 0o600
        # The default transport (split): the databases are served from a child process.
        assert quickstart.proc is not None
        assert any("orrery.standalone_node" in c for c in _children(quickstart.proc.pid))

        async def chat(c: Client) -> None:
            assert (await c.call("quickstart-chat", "set_name", "Alice", token=token)).status == 200
            assert (await c.call("quickstart-chat", "send_message", "Hello, Orrery!", token=token)).status == 200
            users = await c.rows("quickstart-chat", "SELECT * FROM user")
            assert [u[1] for u in users] == [[0, "Alice"]]
            messages = await c.rows("quickstart-chat", "SELECT * FROM message")
            assert [m[2] for m in messages] == ["Hello, Orrery!"]
            logs = await c.get("/v1/database/quickstart-chat/logs", token=token)
            records = [json.loads(line) for line in logs.text.splitlines()]
            assert any(r["message"].endswith("sets name to Alice") for r in records)
            assert any(r["message"].endswith(": Hello, Orrery!") for r in records)

        quickstart.run(chat)
    assert "Published quickstart-chat (created)" in text
    assert "curl -X POST" in text and "orrery call" in text and "quickstart.token" in text

    with quickstart:
        assert "Published quickstart-chat (updated)" in quickstart.wait_for_output("Press Ctrl-C")
        assert (data / "quickstart.token").read_text().strip() == token

        async def kept(c: Client) -> None:
            assert [m[2] for m in await c.rows("quickstart-chat", "SELECT * FROM message")] == ["Hello, Orrery!"]

        quickstart.run(kept)
