"""The ``orrery controlplane`` process: starts on an embedded store, serves, stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TextIO

import grpc
import pytest

from clustermeta.metastore_lmdb import LmdbMetaStore
from clustermeta.records import CONTROLPLANE_LEADER_KEY, CONTROLPLANES_PREFIX
from orrery.cli import build_parser
from proto import auth
from proto import controlplane_pb2 as pb
from proto import controlplane_pb2_grpc as pb_grpc
from sats.identity import Identity
from tests.cluster_secret import SECRET, secret_file

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
    proc, log, address = _start(tmp_path, "--lease-ttl", "1")
    try:
        async def talk() -> None:
            async with auth.channel(address, SECRET) as channel:
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


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], TextIO, str]:
    """``orrery controlplane`` as cp-x on an embedded store in ``tmp_path``, with the cluster
    secret: the process, its log file (stderr) and the address it listens on."""
    cmd = [
        sys.executable, "-m", "orrery.controlplane_server", "--listen-addr", "127.0.0.1:0",
        "--etcd", f"lmdb:{tmp_path / 'meta.lmdb'}", "--id", "cp-x",
        "--cluster-secret-file", str(secret_file(tmp_path)), *extra,
    ]  # fmt: skip
    log = (tmp_path / "cp.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "Orrery control plane cp-x is listening on 127.0.0.1:" not in line:
        proc.kill()
        proc.wait()
        log.close()
        raise AssertionError((line, _log(tmp_path)))
    return proc, log, line.rsplit(" ", 1)[1].strip()


def _log(tmp_path: Path) -> str:
    return (tmp_path / "cp.log").read_text()


def test_calls_without_the_cluster_secret_are_refused(tmp_path: Path) -> None:
    """Only callers holding the cluster secret reach the control plane: none or another secret is
    UNAUTHENTICATED (and changes nothing), logged once for the peer however often it retries."""
    proc, log, address = _start(tmp_path)
    try:
        publish = pb.PublishRequest(caller_identity=Identity.from_claims("localhost", "a").to_bsatn(), program=b"x")

        async def talk() -> None:
            strangers = [grpc.aio.insecure_channel(address), auth.channel(address, auth.ClusterSecret.generate())]
            for channel in strangers:
                async with channel:
                    stub = pb_grpc.ControlPlaneStub(channel)
                    for call in (stub.ClusterStatus(pb.ClusterStatusRequest(), timeout=30), stub.Publish(publish, timeout=30)):
                        with pytest.raises(grpc.aio.AioRpcError) as refused:
                            await call
                        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                        assert "lacks the cluster secret" in (refused.value.details() or "")
            async with auth.channel(address, SECRET) as channel:
                status = await pb_grpc.ControlPlaneStub(channel).ClusterStatus(pb.ClusterStatusRequest(), timeout=30)
                assert json.loads(status.json) == {"nodes": [], "databases": []}

        asyncio.run(talk())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert _log(tmp_path).count("refusing calls from ipv4:127.0.0.1") == 1, _log(tmp_path)


def test_the_process_refuses_to_start_without_a_usable_secret(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "orrery.controlplane_server", "--etcd", f"lmdb:{tmp_path / 'meta.lmdb'}"]
    env = {k: v for k, v in os.environ.items() if k != "ORRERY_CLUSTER_SECRET_FILE"}
    bad = tmp_path / "bad-secret"
    bad.write_text("not hex\n")
    for extra, message in (
        ([], "no cluster secret: pass --cluster-secret-file PATH or set ORRERY_CLUSTER_SECRET_FILE"),
        (["--cluster-secret-file", str(tmp_path / "absent")], "cannot read the cluster secret file"),
        (["--cluster-secret-file", str(bad)], "a cluster secret is 64 lowercase hex digits"),
    ):
        done = subprocess.run([*base, *extra], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr
