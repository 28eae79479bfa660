"""``orrery.standalone --transport split``: the gateway and the host node as two processes.

What a user of the split server relies on beyond the API (which every transport-parametrised test
runs over split too): the databases really run in a second process; the two stop together, whichever
goes first — a host node that dies takes the server down with a message instead of leaving a
gateway that answers nothing, and a gateway that is killed leaves no host node holding the data
directory; ``/v1/metrics`` answers for both processes; nothing acknowledged is lost.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import aiohttp

from tests.gateway.conftest import CHAT
from tests.servers import Client, StandaloneServer
from tests.waits import PATIENCE

SUBSCRIBE_PROTOCOL = "v1.bsatn.spacetimedb"


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def host_node_pid(server: StandaloneServer) -> int:
    """The split server's host-node process."""
    assert server.proc is not None
    nodes = [p for p in children(server.proc.pid) if b"orrery.standalone_node" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(nodes) == 1, f"expected one host-node process under {server.proc.pid}, found {nodes}"
    return nodes[0]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while running(pid):
        assert time.monotonic() < deadline, f"{what} (pid {pid}) still runs after {PATIENCE}s"
        time.sleep(0.05)


async def publish_and_call(c: Client, name: str, text: str) -> str:
    _, token = await c.new_identity()
    assert (await c.publish(name, CHAT, token=token)).status == 200
    assert (await c.call(name, "send_message", text, token=token)).status == 200
    return token


def test_the_databases_run_in_a_second_process_and_stop_with_the_server(tmp_path: Path) -> None:
    with StandaloneServer(tmp_path / "data", transport="split") as server:
        assert server.proc is not None
        node = host_node_pid(server)
        assert node != server.proc.pid

        async def body(c: Client) -> None:
            await publish_and_call(c, "split-chat", "hello")
            assert [r[-1] for r in await c.rows("split-chat", "SELECT * FROM message")] == ["hello"]
            metrics = await c.get("/v1/metrics")
            assert metrics.status == 200
            families = re.findall(r"^# TYPE (\S+) ", metrics.text, re.M)
            # The gateway's own families, then the host node's (fetched over the link), each once.
            assert "orrery_gateway_http_requests_total" in families
            assert "spacetime_num_txns_total" in families
            assert len(families) == len(set(families)), sorted(f for f in families if families.count(f) > 1)

        server.run(body)
        # Both processes serve tuned (hostnode/runtime.py): the gateway holds the connections.
        tuned = re.findall(r"serving with GIL switch interval 2 ms, collector thresholds \(50000, ", server.log_text())
        assert len(tuned) == 2, server.log_text()
        assert server.stop() == 0
        wait_gone(node, "the host-node process")


def test_a_host_node_that_dies_stops_the_server_with_a_message_and_loses_nothing(tmp_path: Path) -> None:
    with StandaloneServer(tmp_path / "data", transport="split") as server:
        proc = server.proc
        assert proc is not None

        async def body(c: Client) -> int:
            await publish_and_call(c, "doomed", "acknowledged before the crash")
            url = c.base_url.replace("http://", "ws://") + "/v1/database/doomed/subscribe"
            async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=(SUBSCRIBE_PROTOCOL,)) as sock:
                first = await sock.receive(PATIENCE)  # IdentityToken: the node took the client
                assert first.type is aiohttp.WSMsgType.BINARY
                os.kill(host_node_pid(server), signal.SIGKILL)
                closed = await sock.receive(PATIENCE)
                assert closed.type is aiohttp.WSMsgType.CLOSE, closed
                return sock.close_code or 0

        assert server.run(body) == 1012  # "service restart": reconnect
        assert proc.wait(PATIENCE) == 1
        assert "the host-node process exited with status -9" in server.log_text()
        server.proc = None

        async def after(c: Client) -> None:
            assert [r[-1] for r in await c.rows("doomed", "SELECT * FROM message")] == ["acknowledged before the crash"]

        server.start()  # the same data directory opens again: nothing was lost, no lock was left
        server.run(after)


def test_a_killed_gateway_leaves_no_host_node_behind(tmp_path: Path) -> None:
    with StandaloneServer(tmp_path / "data", transport="split") as server:
        server.run(lambda c: publish_and_call(c, "orphan", "before the gateway died"))
        node = host_node_pid(server)
        server.kill()  # SIGKILL: no shutdown at all; the node sees the link's end of file
        wait_gone(node, "the host-node process of a killed gateway")

        async def after(c: Client) -> None:
            assert [r[-1] for r in await c.rows("orphan", "SELECT * FROM message")] == ["before the gateway died"]

        server.start()
        server.run(after)


def test_a_host_node_that_cannot_start_is_reported_in_one_line_each(tmp_path: Path) -> None:
    """The node's own error, then the server's, as the lines a user reads — no traceback — and
    exit status 1 (``python -m orrery.standalone`` runs the module as ``__main__``: the error
    class must be the one its handler knows)."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    (data / "node").write_text("not a directory")
    done = subprocess.run(
        [sys.executable, "-m", "orrery.standalone", "--listen-addr", "127.0.0.1:0", "--data-dir", str(data),
         "--transport", "split"],
        capture_output=True, text=True, timeout=PATIENCE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Not a directory" in done.stderr
    assert "error: the host-node process exited with status 1 before it was ready" in done.stderr
    assert "Traceback" not in done.stderr
