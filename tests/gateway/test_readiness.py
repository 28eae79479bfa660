"""A cluster gateway's ``/readyz`` (and ``/healthz``) on its ``--metrics-addr`` listener and its
public port: not ready until a control plane is active, ready while its watch on etcd is up, not
ready again while etcd is down, ready once it is back."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from clustermeta.metastore_etcd import EtcdMetaStore
from clustermeta.records import CONTROLPLANE_LEADER_KEY, ControlPlaneInfo
from tests.cluster_secret import secret_file
from tests.etcd_harness import EtcdServer, free_port
from tests.gateway.cluster_harness import spawn
from tests.servers import Client
from tests.waits import PATIENCE

PREFIX = "/readiness"


async def _until(client: Client, path: str, want: tuple[int, str], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + PATIENCE
    last: tuple[int, str] | None = None
    while True:
        try:
            reply = await client.get(path)
            last = (reply.status, reply.text)
        except OSError as e:
            last = (0, str(e))
        if last == want:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}; last answer {last}"
        await asyncio.sleep(0.05)


def test_gateway_readiness_follows_etcd_and_the_control_plane(tmp_path: Path) -> None:
    async def main() -> None:
        with EtcdServer.start(tmp_path / "etcd") as etcd:
            metrics_port, port = free_port(), free_port()
            child = await spawn(
                "-m", "orrery.cli", "gateway", "--listen-addr", f"127.0.0.1:{port}", "--etcd", etcd.endpoints,
                "--etcd-prefix", PREFIX, "--keys-dir", str(tmp_path / "keys"),
                "--metrics-addr", f"127.0.0.1:{metrics_port}", "--cluster-secret-file", str(secret_file(tmp_path)),
                env={"ORRERY_CONFIG": str(tmp_path / "cli.toml")},
            )  # fmt: skip
            try:
                async with Client(f"http://127.0.0.1:{metrics_port}") as m:
                    await _until(m, "/healthz", (200, "ok\n"), "the metrics listener")
                    await _until(m, "/readyz", (503, "not ready: no control plane is active\n"), "not ready")
                    store = await EtcdMetaStore.open(etcd.endpoints, prefix=PREFIX)
                    try:
                        await store.put(CONTROLPLANE_LEADER_KEY, ControlPlaneInfo("cp-1", "127.0.0.1:1").to_json())
                    finally:
                        await store.close()
                    await _until(m, "/readyz", (200, "ok\n"), "ready once a control plane is active")
                    async with Client(f"http://127.0.0.1:{port}") as public:
                        await _until(public, "/readyz", (200, "ok\n"), "the public port ready too")
                        assert "orrery_gateway_view_connected 1.0" in (await public.get("/v1/metrics")).text
                    etcd.kill()
                    await _until(
                        m, "/readyz", (503, "not ready: the watch on the cluster's metadata store is down (reconnecting)\n"),
                        "not ready while etcd is down",
                    )  # fmt: skip
                    assert (await m.get("/healthz")).status == 200
                    etcd.restart()
                    await _until(m, "/readyz", (200, "ok\n"), "ready again once etcd is back")
            finally:
                child.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(child.wait(), 30) == 0

    asyncio.run(asyncio.wait_for(main(), 300))
