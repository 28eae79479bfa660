"""The ports a local cluster picks for its processes before any of them listens."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from orrery.cluster_local import ClusterError, Proc, _ephemeral_ports, free_port, owns_listener


def test_free_ports_never_repeat_and_stay_below_the_source_port_range() -> None:
    # A cluster picks all its ports first and its processes bind them later: a repeated pick
    # made a host node fail to bind ("address already in use") in a full-suite run.
    low, _ = _ephemeral_ports()
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)
    if low > 11_000:
        assert all(10_000 <= p < low for p in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out


def _listening_child(port: int) -> list[str]:
    code = (
        "import socket, sys, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "time.sleep(30)\n"
    )
    return [sys.executable, "-c", code]


def test_a_process_is_ready_only_when_it_owns_its_port(tmp_path: Path) -> None:
    # Another program answering on the port picked for ours (it took the port first: ours will
    # fail to bind it) must not pass for ours.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = f"127.0.0.1:{other.getsockname()[1]}"
        assert not owns_listener(os.getpid() + 10**7, taken)
        assert owns_listener(os.getpid(), taken)
        squatted = Proc("squatted", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "a.log", taken)
        squatted.start()
        try:
            with pytest.raises(ClusterError, match="did not become ready"):
                squatted.wait_ready(1.0)
        finally:
            squatted.stop(sig=signal.SIGKILL)
    port = free_port()
    own = Proc("own", _listening_child(port), tmp_path / "b.log", f"127.0.0.1:{port}")
    own.start()
    try:
        own.wait_ready(20.0)
        assert owns_listener(own.pid, f"127.0.0.1:{port}")
    finally:
        own.stop(sig=signal.SIGKILL)
