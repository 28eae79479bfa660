"""``orrery gateway``: the cluster gateway as its own process, over a cluster's records and a real
host node on 127.0.0.1 — ready line, health with the live nodes, calls routed to the leader,
the shared signing keys, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from clustermeta.metastore_lmdb import LmdbMetaStore
from orrery.cli import build_parser
from orrery.cli_errors import CliError
from sats.identity import Identity
from tests.cluster_secret import secret_file
from tests.etcd_harness import EtcdServer
from tests.gateway.cluster_harness import REPO_ROOT, nodes, put_database, register_node, spawn
from tests.gateway.conftest import CHAT
from tests.servers import Client

OWNER = Identity.from_claims("localhost", "owner")
DB = Identity.from_claims("localhost", "process")
READY = re.compile(rb"listening on http://(\S+)")


async def start_gateway(store_path: Path, keys: Path, tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    child = await spawn(
        "-m", "orrery.cli", "gateway", "--listen-addr", "127.0.0.1:0", "--etcd", f"lmdb:{store_path}",
        "--keys-dir", str(keys), "--cluster-secret-file", str(secret_file(tmp_path)),
        env={"ORRERY_CONFIG": str(tmp_path / "cli.toml")},
    )  # fmt: skip
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 60)
    match = READY.search(line)
    assert match, line
    return child, f"http://{match.group(1).decode()}"


async def stop(child: asyncio.subprocess.Process) -> int:
    child.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(child.wait(), 30)


def test_orrery_gateway_serves_a_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        store_path, keys = tmp_path / "meta.lmdb", tmp_path / "keys"
        async with nodes(tmp_path, "n1") as started:
            n1 = started["n1"]
            await n1.install(DB, OWNER, CHAT)
            store = await LmdbMetaStore.open(store_path)
            await register_node(store, "n1", n1.address)
            await put_database(store, DB, OWNER, leader="n1", replicas=["n1"], name="chat")
            await store.close()  # one process at a time opens an embedded store

            child, url = await start_gateway(store_path, keys, tmp_path)
            try:
                async with Client(url) as c:
                    health = (await c.get("/v1/health")).json()
                    assert health["nodes"] == ["n1"] and health["schedulable"] is True
                    assert (await c.call("chat", "send_message", "via the process")).status == 200
                    assert [r[2] for r in await c.rows("chat", "SELECT * FROM message")] == ["via the process"]
                    identity, token = await c.new_identity()
                    public_key = (await c.get("/v1/identity/public-key")).text
            finally:
                assert await stop(child) == 0
            assert sorted(p.name for p in keys.iterdir()) == ["id_ecdsa", "id_ecdsa.pub"]
            assert (keys / "id_ecdsa.pub").read_text() == public_key

            # Another gateway over the same keys accepts the first one's tokens.
            child, url = await start_gateway(store_path, keys, tmp_path)
            try:
                async with Client(url) as c:
                    assert (await c.get(f"/v1/identity/{identity}/verify", token=token)).status == 204
            finally:
                assert await stop(child) == 0

    asyncio.run(asyncio.wait_for(main(), 120))


def test_orrery_gateway_needs_etcd_and_keys() -> None:
    args = build_parser().parse_args(["gateway", "--etcd", "127.0.0.1:2379", "--keys-dir", "k"])
    assert (args.command, args.etcd, args.etcd_prefix, args.keys_dir, args.listen_addr) == (
        "gateway", "127.0.0.1:2379", "/orrery", "k", "127.0.0.1:3000",
    )  # fmt: skip
    for missing in (["gateway", "--keys-dir", "k"], ["gateway", "--etcd", "e"]):
        with pytest.raises(CliError, match="required"):
            build_parser().parse_args(missing)


def test_orrery_gateway_waits_for_an_etcd_that_does_not_answer_yet(tmp_path: Path) -> None:
    """A gateway started while etcd does not answer (starting beside it, or too busy) waits for
    it instead of exiting, and serves once it answers."""

    async def main() -> None:
        with EtcdServer.start(tmp_path / "etcd") as etcd:
            etcd.pause()  # connections open, nothing answers: every call hits its deadline
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "orrery.cli", "gateway", "--listen-addr", "127.0.0.1:0",
                "--etcd", etcd.endpoints, "--keys-dir", str(tmp_path / "keys"),
                "--cluster-secret-file", str(secret_file(tmp_path)), cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "ORRERY_CONFIG": str(tmp_path / "cli.toml")},
            )  # fmt: skip
            assert child.stdout is not None and child.stderr is not None
            try:
                warning = await asyncio.wait_for(child.stderr.readline(), 60)
                assert b"waiting for etcd" in warning, warning
                etcd.resume()
                line = await asyncio.wait_for(child.stdout.readline(), 60)
                match = READY.search(line)
                assert match, line
                async with Client(f"http://{match.group(1).decode()}") as c:
                    assert (await c.get("/v1/ping")).status == 200
                # It holds every client's connection: it serves tuned, as host nodes do.
                tuned = await asyncio.wait_for(_line_with(child.stderr, b"serving with GIL switch interval 2 ms"), 30)
                assert b"collector thresholds (50000, " in tuned, tuned
            finally:
                assert await stop(child) == 0

    asyncio.run(asyncio.wait_for(main(), 120))


async def _line_with(stream: asyncio.StreamReader, text: bytes) -> bytes:
    """The first line of ``stream`` holding ``text`` (AssertionError at its end)."""
    while line := await stream.readline():
        if text in line:
            return line
    raise AssertionError(f"{text!r} never came")
