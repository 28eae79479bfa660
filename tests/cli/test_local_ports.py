"""The ports a local cluster picks for its processes before any of them listens."""

from __future__ import annotations

import socket

from orrery.cluster_local import _ephemeral_ports, free_port


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
