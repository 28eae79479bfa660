"""The manifests run: for the base and every overlay, every pod's containers are started from the
rendered objects' own ``command``/``args``/``env`` as local processes (tests/k8s/localpods.py:
pod names, pod IPs and service DNS names → 127.0.0.1 ports, volumes → directories), and:

1. every pod becomes Ready and every liveness probe passes (probes as the kubelet performs them;
   ``/healthz`` and ``/readyz`` through the stand-in of tests/k8s/health.py until the metrics
   work is merged);
2. through the gateway Service a person publishes a 3-replica database, calls reducers and reads
   the result back through every gateway pod;
3. (the base only: the overlays run the same host node StatefulSet, whose grace period and
   handoff timeout tests/k8s/test_manifests.py checks in each) the host node StatefulSet is
   rolled as ``kubectl rollout restart`` would roll it — one pod at a time, highest ordinal
   first, SIGTERM and the pod's ``terminationGracePeriodSeconds``, the next only when the
   restarted one is Ready — while transfers keep coming: every pod exits by itself within its
   grace period (the handoff fits), and no acknowledged transfer is lost;
4. at the end every pod gets SIGTERM at once (the namespace deleted) and exits within its grace.

A typo in a command line, an env reference, a port, a Service, a volume or a probe fails here.
The gateway's signing keys are made the way deploy/k8s/README.md tells a person to (openssl).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proto.auth import ClusterSecret
from tests.cluster.bank_load import Ledger
from tests.cluster.harness import MODULES, eventually, run_async
from tests.k8s.localpods import LocalPods
from tests.k8s.manifests import TARGETS, render
from tests.servers import Client

pytestmark = pytest.mark.slow

#: Seconds every pod gets to become Ready (a bound for broken manifests, not a speed test).
READY_TIMEOUT = 300.0
#: The target whose host nodes are rolled under load.
ROLLED = "base"
ACCOUNTS = 20
BALANCE = 1_000_000


def _gateway_keys(where: Path) -> dict[str, bytes]:
    """The ES256 pair for the Secret orrery-gateway-keys, made as the README says."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("openssl"):
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "id_ecdsa"], cwd=where, check=True)
        subprocess.run(["openssl", "ec", "-in", "id_ecdsa", "-pubout", "-out", "id_ecdsa.pub"], cwd=where, check=True, capture_output=True)
    else:  # the same pair, without the command-line tool
        from gateway.auth import SigningKeys

        SigningKeys.load_or_create(where)
    return {"id_ecdsa": (where / "id_ecdsa").read_bytes(), "id_ecdsa.pub": (where / "id_ecdsa.pub").read_bytes()}


def _cluster_secret() -> dict[str, bytes]:
    """The Secret orrery-cluster-secret, made as the README says (``openssl rand -hex 32``)."""
    if shutil.which("openssl"):
        value = subprocess.run(["openssl", "rand", "-hex", "32"], check=True, capture_output=True).stdout
    else:  # the same 64 hex digits, without the command-line tool
        value = (secrets.token_hex(32) + "\n").encode()
    return {"cluster-secret": value}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory on tmpfs where possible (etcd 3.4 fsyncs; tmpfs makes that free)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="orrery-k8s-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("target", TARGETS)
def test_the_manifests_run_as_a_working_cluster(target: str, scratch: Path) -> None:
    objects = render(target)
    keys = _gateway_keys(scratch / "keys")
    cluster_secret = _cluster_secret()
    created = {"orrery-gateway-keys": keys, "orrery-cluster-secret": cluster_secret}
    with LocalPods(objects, scratch / "cluster", secrets=created) as pods:
        pods.start()
        pods.wait_ready(READY_TIMEOUT)
        for pod, c in pods.containers():
            ok, detail = pods.probe(pod, c, "livenessProbe")
            assert ok, f"{pod.name}/{c.name} liveness: {detail}"
        gateways = [f"http://{a}" for a in pods.service_address("orrery-gateway", "http")]
        assert len(gateways) == len(pods.of("gateway"))
        run_async(_cluster_formed(pods, ClusterSecret(cluster_secret["cluster-secret"].decode().strip())), timeout=300)
        token = run_async(_publish(gateways), timeout=300)
        if target == ROLLED:
            run_async(_roll(pods, gateways, token), timeout=900)
        restarts = {f"{p.name}/{c.name}": c.restarts for p, c in pods.containers() if c.restarts}
        print(f"\n{target}: {len(pods.pods)} pods; container restarts: {restarts or 'none'}")
        # Deleting the namespace: SIGTERM to every pod at once; each exits within its grace
        # (etcd ends by re-raising SIGTERM after its clean shutdown; Orrery's processes exit 0).
        pods.close()
        for pod, c in pods.containers():
            assert c.popen is not None and not c.killed, f"{pod.name}/{c.name} outlived its grace period:\n{c.log_tail()}"
            if c.argv[1:3] == ["-m", "orrery"]:
                assert c.popen.returncode == 0, f"{pod.name}/{c.name} exited {c.popen.returncode}:\n{c.log_tail()}"


async def _cluster_formed(pods: LocalPods, secret: ClusterSecret) -> None:
    """Wait until every control plane sees every host node alive (``orrery cluster status``, as a
    person would check before publishing; a Ready host node is registered, and the control planes
    hear of it through their watch a moment later)."""
    from proto import auth
    from proto import controlplane_pb2 as cpb
    from proto import controlplane_pb2_grpc as cpb_grpc

    want = {p.name for p in pods.of("hostnode")}
    for cp in pods.of("controlplane"):
        async with auth.channel(cp.address(cp.port("grpc")), secret) as channel:
            stub = cpb_grpc.ControlPlaneStub(channel)

            async def all_alive(stub: cpb_grpc.ControlPlaneStub = stub) -> bool:
                reply = await stub.ClusterStatus(cpb.ClusterStatusRequest(), timeout=10)
                alive = {n["id"] for n in json.loads(reply.json)["nodes"] if n["alive"]}
                return want <= alive

            await eventually(all_alive, READY_TIMEOUT, f"{cp.name} seeing every host node")


async def _publish(gateways: list[str]) -> str:
    """Publish the bank module with three replicas through the first gateway, seed it, and read
    it through every gateway; the owner's token."""
    program = (MODULES / "bank" / "bank.wasm").read_bytes()
    async with Client(gateways[0]) as c:
        token = (await c.new_identity())[1]
        reply = await c.post("/v1/database/bank", data=program, token=token, params={"num_replicas": "3"})
        assert reply.status == 200, reply
        reply = await c.post("/v1/database/bank/call/seed", json_body=[ACCOUNTS, BALANCE], token=token)
        assert reply.status == 200, reply
    for url in gateways:  # every gateway serves it, with the same keys
        async with Client(url) as c:
            assert await _sum(c, token) == ACCOUNTS * BALANCE
    return token


async def _roll(pods: LocalPods, gateways: list[str], token: str) -> None:
    """Roll the host nodes under transfer load; no acknowledged transfer may be lost."""
    ledger = Ledger()
    stop = asyncio.Event()

    async def load(n: int) -> None:
        rnd = random.Random(n)
        async with Client(gateways[n % len(gateways)]) as wc:
            while not stop.is_set():
                tid = next(ledger.ids)
                a, b = rnd.sample(range(ACCOUNTS), 2)
                try:
                    r = await asyncio.wait_for(
                        wc.post("/v1/database/bank/call/transfer", json_body=[tid, a, b, 1], token=token), 60
                    )
                except (OSError, TimeoutError):
                    ledger.unknown.add(tid)
                    continue
                if r.status == 200:
                    ledger.acked.add(tid)
                else:
                    assert r.status in (502, 503, 504, 530), r
                    (ledger.failed if r.status == 530 else ledger.unknown).add(tid)
                    await asyncio.sleep(0.05)

    workers = [asyncio.create_task(load(n)) for n in range(3)]
    try:
        # kubectl rollout restart statefulset/orrery-hostnode: highest ordinal first, one at a time.
        for pod in sorted(pods.of("hostnode"), key=lambda p: -p.ordinal):
            before = len(ledger.acked)
            await _until(lambda b=before: len(ledger.acked) > b, f"transfers committing before {pod.name} restarts")
            codes, took = await asyncio.to_thread(pods.terminate, pod)
            assert codes == [0], f"{pod.name} exited {codes} after {took:.1f}s (None: killed):\n{pod.containers[0].log_tail()}"
            await asyncio.to_thread(pods.release, pod)
            await asyncio.to_thread(pods.wait_ready, READY_TIMEOUT, [pod])
        before = len(ledger.acked)
        await _until(lambda: len(ledger.acked) > before, "transfers committing after the rollout")
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    async with Client(gateways[-1]) as c:
        reply = await c.post("/v1/database/bank/sql", data="SELECT * FROM ledger", token=token)
        assert reply.status == 200, reply
        ids = {int(r[0]) for r in reply.json()[0]["rows"]}
        assert await _sum(c, token) == ACCOUNTS * BALANCE
    missing = ledger.acked - ids
    assert not missing, f"{len(missing)} acknowledged transfers were lost in the rollout, e.g. {sorted(missing)[:10]}"
    assert not (ledger.failed & ids)
    print(f"rollout under load: {len(ledger.acked)} acknowledged, {len(ledger.unknown)} unknown")


async def _sum(c: Client, token: str) -> int:
    reply = await c.post("/v1/database/bank/sql", data="SELECT * FROM accounts", token=token)
    assert reply.status == 200, reply
    rows: list[Any] = reply.json()[0]["rows"]
    return sum(int(r[1]) for r in rows)


async def _until(check: Any, what: str, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
