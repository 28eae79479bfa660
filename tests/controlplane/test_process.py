"""The ``orrery controlplane`` process: starts on an embedded store, serves, stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from clustermeta.metastore_lmdb import LmdbMetaStore
from clustermeta.records import CONTROLPLANE_LEADER_KEY, CONTROLPLANES_PREFIX
from orrery.cli import build_parser
from proto import controlplane_pb2 as pb
from proto import controlplane_pb2_grpc as pb_grpc
from sats.identity import Identity

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_command_line_parses() -> None:
    args = build_parser().parse_args(
        ["controlplane", "--etcd", "a:2379,b:2379", "--etcd-prefix", "/x", "--id", "cp1", "--lease-ttl", "3"]
    )
    assert (args.command, args.etcd, args.etcd_prefix, args.id, args.lease_ttl) == (
        "controlplane", "a:2379,b:2379", "/x", "cp1", 3.0,
    )
    assert args.listen_addr == "127.0.0.1:5100"


def test_the_process_serves_and_gives_its_seat_up_on_sigterm(tmp_path: Path) -> None:
    store_path = tmp_path / "meta.lmdb"
    cmd = [
        sys.executable, "-m", "orrery.controlplane_server", "--listen-addr", "127.0.0.1:0",
        "--etcd", f"lmdb:{store_path}", "--id", "cp-x", "--lease-ttl", "1",
    ]  # fmt: skip
    log = (tmp_path / "cp.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "Orrery control plane cp-x is listening on 127.0.0.1:" in line, (line, _log(tmp_path))
        address = line.rsplit(" ", 1)[1].strip()

        async def talk() -> None:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.ControlPlaneStub(channel)
                status = await stub.ClusterStatus(pb.ClusterStatusRequest(), timeout=30)
                assert json.loads(status.json) == {"nodes": [], "databases": []}
                for _ in range(300):  # it becomes active right after it starts listening
                    answer = await stub.Publish(
                        pb.PublishRequest(caller_identity=Identity.from_claims("localhost", "a").to_bsatn(), program=b"x"),
                        timeout=30,
                    )
                    if answer.failure.kind != pb.ERROR_KIND_NOT_ACTIVE:
                        break
                    await asyncio.sleep(0.1)
                assert answer.failure.kind == pb.ERROR_KIND_UNAVAILABLE
                assert answer.failure.message == "no host node is live: the database cannot be placed"

        asyncio.run(talk())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = _log(tmp_path)
    assert "control plane active id=cp-x" in text and "level=error" not in text

    async def after() -> None:
        store = await LmdbMetaStore.open(store_path)
        try:
            # The lease was revoked on the way out: a standby would not have had to wait for it.
            assert await store.get(CONTROLPLANE_LEADER_KEY) is None
            assert (await store.get_prefix(CONTROLPLANES_PREFIX)).kvs == []
        finally:
            await store.close()

    asyncio.run(after())


def _log(tmp_path: Path) -> str:
    return (tmp_path / "cp.log").read_text()
