"""``orrery subscribe`` end to end: the CLI as a subprocess against a real server, fed by SDK clients."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from orrery.cli_subscribe import format_update, subscribe_url
from orrery_client import DbConnection
from orrery_client.schema import ModuleSchema
from sats import ws_v1 as ws
from tests.client.conftest import CHAT, publish
from tests.client.test_sdk import run
from tests.servers import REPO_ROOT, StandaloneServer


async def _cli(config: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "ORRERY_CONFIG": str(config)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orrery.cli", *args, cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def test_subscribe_prints_num_updates_json_lines(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "cli-sub", CHAT)
        sender = await DbConnection.connect(url, db)
        proc = await _cli(
            tmp_path / "cli.toml", "subscribe", db, "SELECT * FROM message", "SELECT * FROM user",
            "--num-updates", "2", "--timeout", "30", "--print-initial-update", "-s", url,
        )  # fmt: skip
        assert proc.stdout is not None
        initial = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        users = initial["user"]["inserts"]
        assert {"__identity__": f"0x{sender.identity.to_hex()}"} in [u["identity"] for u in users]
        assert all(set(u) == {"identity", "name", "online"} for u in users)
        assert (await sender.call_reducer("set_name", "ann")).committed
        assert (await sender.call_reducer("send_message", "hello")).committed
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        lines: list[Any] = [json.loads(line) for line in out.decode().splitlines()]
        me = {"__identity__": f"0x{sender.identity.to_hex()}"}
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
        assert len(lines) == 2
        assert "WARNING: This command is UNSTABLE" in err.decode()
        await sender.close()

    run(server, body)


def test_subscribe_timeout_exits_successfully(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "cli-timeout", CHAT)
        proc = await _cli(tmp_path / "cli.toml", "subscribe", db, "SELECT * FROM message", "-t", "1", "-s", url)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert out == b""
        assert "timed out after 1s" in err.decode()

    run(server, body)


def test_subscribe_reports_a_bad_query(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "cli-bad", CHAT)
        proc = await _cli(
            tmp_path / "cli.toml", "subscribe", db, "SELECT * FROM nope", "-t", "10", "-s", url, "--anonymous"
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode != 0
        assert "Error: encountered failed transaction:" in err.decode() and "nope" in err.decode()

    run(server, body)


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
