"""``orrery subscribe`` end to end: the CLI as a subprocess against a real server, fed by SDK clients."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest
from aiohttp import web

from orrery.cli_subscribe import format_update, run_subscribe, subscribe_url
from orrery_client import DbConnection
from orrery_client.schema import ModuleSchema
from sats import ws_v1 as ws
from tests.client.conftest import CHAT, publish
from tests.client.test_sdk import run
from tests.servers import REPO_ROOT, StandaloneServer

#: Server log lines shown with a failure.
LOG_TAIL = 40


class _Cli:
    """``python -m orrery.cli ARGS`` as a subprocess (``async with``).

    Its stderr is collected from the start, so every failure says what the CLI reported (and
    the tail of the server's log); leaving the block kills it if it is still running.
    """

    def __init__(self, server: StandaloneServer, config: Path, *args: str) -> None:
        self.server = server
        self.config = config
        self.args = args

    async def __aenter__(self) -> _Cli:
        env = {**os.environ, "ORRERY_CONFIG": str(self.config)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orrery.cli", *self.args, cwd=REPO_ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout = self.proc.stdout
        self._stderr = asyncio.ensure_future(self.proc.stderr.read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> str:
        """Kill the CLI if it still runs; everything it wrote on stderr."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        return (await self._stderr).decode(errors="replace")

    async def fail(self, what: str) -> NoReturn:
        """Fail the test with ``what``, the CLI's exit code and stderr, and the server's log tail."""
        err = await self._stop()
        log = "\n".join(self.server.log_text().splitlines()[-LOG_TAIL:])
        pytest.fail(
            f"orrery {self.args[0]} {what} (exit code {self.proc.returncode})\n"
            f"--- its stderr:\n{err}\n--- the server's log (tail):\n{log}",
            pytrace=False,
        )

    async def line(self, timeout: float) -> Any:
        """The next stdout line, parsed as JSON."""
        try:
            line = await asyncio.wait_for(self.stdout.readline(), timeout)
        except TimeoutError:
            await self.fail(f"printed no line within {timeout:g}s")
        if not line:
            await self.fail("exited without printing the next line")
        try:
            return json.loads(line)
        except ValueError:
            await self.fail(f"printed a line that is not JSON: {line[:200]!r}")

    async def exit(self, timeout: float) -> tuple[str, str]:
        """Wait for the CLI to exit by itself; (the rest of its stdout, its stderr)."""
        try:
            out = await asyncio.wait_for(self.stdout.read(), timeout)
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.fail(f"did not exit within {timeout:g}s")
        return out.decode(), await self._stop()

    async def finish(self, timeout: float) -> tuple[str, str]:
        """:meth:`exit`, which must be successful."""
        out, err = await self.exit(timeout)
        if self.proc.returncode != 0:
            await self.fail("failed")
        return out, err


def test_subscribe_prints_num_updates_json_lines(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "cli-sub", CHAT)
        async with await DbConnection.connect(url, db) as sender, _Cli(
            server, tmp_path / "cli.toml", "subscribe", db, "SELECT * FROM message", "SELECT * FROM user",
            "--num-updates", "2", "--timeout", "30", "--print-initial-update", "-s", url,
        ) as cli:  # fmt: skip
            # The reducers are called only once the subscription is applied (its initial update
            # printed), so both of their commits must reach the CLI.
            initial = await cli.line(30)
            users = initial["user"]["inserts"]
            me = {"__identity__": f"0x{sender.identity.to_hex()}"}
            assert me in [u["identity"] for u in users]
            assert all(set(u) == {"identity", "name", "online"} for u in users)
            assert (await sender.call_reducer("set_name", "ann")).committed
            assert (await sender.call_reducer("send_message", "hello")).committed
            out, err = await cli.finish(30)
        assert "timed out" not in err and "disconnected" not in err, err
        lines: list[Any] = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 2, (lines, err)
        assert lines[0] == {
            "user": {
                "deletes": [{"identity": me, "name": {"none": {}}, "online": True}],
                "inserts": [{"identity": me, "name": {"some": "ann"}, "online": True}],
            }
        }
        (msg,) = lines[1]["message"]["inserts"]
        assert lines[1]["message"]["deletes"] == [] and list(lines[1]) == ["message"]
        assert msg["sender"] == me and msg["text"] == "hello"
        assert set(msg["sent"]) == {"__timestamp_micros_since_unix_epoch__"}
        assert "WARNING: This command is UNSTABLE" in err

    run(server, body)


def test_subscribe_timeout_exits_successfully(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "cli-timeout", CHAT)
        args = ("subscribe", db, "SELECT * FROM message", "-t", "1", "-s", url)
        async with _Cli(server, tmp_path / "cli.toml", *args) as cli:
            out, err = await cli.finish(30)
        assert out == ""
        assert "timed out after 1s" in err

    run(server, body)


def test_subscribe_reports_a_bad_query(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "cli-bad", CHAT)
        args = ("subscribe", db, "SELECT * FROM nope", "-t", "10", "-s", url, "--anonymous")
        async with _Cli(server, tmp_path / "cli.toml", *args) as cli:
            _, err = await cli.exit(30)
        assert cli.proc.returncode != 0
        assert "Error: encountered failed transaction:" in err and "nope" in err

    run(server, body)


def test_subscribe_reports_a_close_before_the_initial_update(tmp_path: Path) -> None:
    """A server that closes the socket before answering the subscription: the CLI says so on
    stderr (as 1.12 does), instead of exiting silently."""

    async def close_at_once(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(protocols=("v1.json.spacetimedb",))
        await sock.prepare(request)
        await sock.receive()  # the Subscribe
        await sock.close(code=1011, message=b"going away")
        return sock

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/database/{db}/subscribe", close_at_once)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            schema = ModuleSchema.from_json({"typespace": {"types": []}, "tables": [], "reducers": []})
            url = subscribe_url(f"http://127.0.0.1:{port}", "ab", False)
            for num_updates, said in ((None, True), (1, True), (0, False)):
                out, err = io.StringIO(), io.StringIO()
                await asyncio.wait_for(
                    run_subscribe(
                        url, None, ["SELECT * FROM t"], schema, num_updates=num_updates, timeout=10,
                        print_initial=True, out=out, err=err,
                    ),
                    30,
                )  # fmt: skip
                assert out.getvalue() == ""
                assert ("disconnected by server" in err.getvalue()) is said, (num_updates, err.getvalue())
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_format_update_merges_tables_and_types_rows() -> None:
    schema = ModuleSchema.from_json(
        {
            "typespace": {
                "types": [
                    {
                        "Product": {
                            "elements": [
                                {"name": {"some": "id"}, "algebraic_type": {"U32": []}},
                                {
                                    "name": {"some": "tag"},
                                    "algebraic_type": {
                                        "Sum": {
                                            "variants": [
                                                {"name": {"some": "some"}, "algebraic_type": {"String": []}},
                                                {"name": {"some": "none"}, "algebraic_type": {"Product": {"elements": []}}},
                                            ]
                                        }
                                    },
                                },
                            ]
                        }
                    }
                ]
            },
            "tables": [{"name": "t", "product_type_ref": 0, "primary_key": [0]}],
            "reducers": [],
        }
    )
    update = ws.DatabaseUpdate(
        (
            ws.TableUpdate(1, "t", (ws.QueryUpdate((), ('{"id":1,"tag":[0,"x"]}',)),)),
            ws.TableUpdate(1, "t", (ws.QueryUpdate(("[2,[1,[]]]",), ()),)),
        )
    )
    assert format_update(update, schema) == (
        '{"t":{"deletes":[{"id":2,"tag":{"none":{}}}],"inserts":[{"id":1,"tag":{"some":"x"}}]}}'
    )
    assert subscribe_url("https://h:1/", "ab", True) == "wss://h:1/v1/database/ab/subscribe?confirmed=true"
    assert subscribe_url("http://h:1", "ab", False) == "ws://h:1/v1/database/ab/subscribe"
