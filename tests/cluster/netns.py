"""Host nodes in network namespaces of their own, joined by a bridge, so a test can cut one off.

Each node runs in namespace ``<tag>n<i>`` with ``eth0`` = 10.X.Y.(10+i)/24, its other end
``<tag>v<i>`` enslaved to the bridge ``<tag>br`` (10.X.Y.1/24) in the test's own namespace,
where etcd, the control plane and the gateway run. :meth:`NodeNamespaces.partition` takes the
node's link down: every packet to or from it is dropped (connections hang, as in a real network
partition — nothing is reset); :meth:`heal` brings it back. Needs root (``ip netns``), as CI has.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

__all__ = ["NodeNamespaces", "netns_available"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"orrprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"`ip netns add` failed: {getattr(e, 'stderr', e)}"
    _ip("netns", "del", name)
    return None


class NodeNamespaces:
    """The namespaces, links and bridge of one cluster's nodes (a ``NodeNetwork``)."""

    def __init__(self, node_ids: list[str]) -> None:
        self.tag = f"o{random.randrange(16**4):04x}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(0, 250)}"
        self.etcd_host = f"{self.subnet}.1"
        self.index = {n: i for i, n in enumerate(node_ids, start=1)}
        self.bridge = f"{self.tag}br"
        self._made: list[str] = []

    def host_of(self, node_id: str) -> str:
        """The node's address."""
        return f"{self.subnet}.{10 + self.index[node_id]}"

    def wrap(self, node_id: str, argv: list[str]) -> list[str]:
        """``argv`` run inside the node's namespace."""
        return ["ip", "netns", "exec", self._ns(node_id), *argv]

    def _ns(self, node_id: str) -> str:
        return f"{self.tag}n{self.index[node_id]}"

    def _veth(self, node_id: str) -> str:
        return f"{self.tag}v{self.index[node_id]}"

    def __enter__(self) -> NodeNamespaces:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append("bridge")
            _ip("addr", "add", f"{self.etcd_host}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for node_id in self.index:
                ns, veth = self._ns(node_id), self._veth(node_id)
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "addr", "add", f"{self.host_of(node_id)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for made in reversed(self._made):
            cmd = ("link", "del", self.bridge) if made == "bridge" else ("netns", "del", made)
            try:
                _ip(*cmd)
            except subprocess.CalledProcessError:
                pass
        self._made.clear()

    def partition(self, node_id: str) -> None:
        """Cut the node off from everyone (its link goes down; packets are dropped)."""
        _ip("link", "set", self._veth(node_id), "down")

    def heal(self, node_id: str) -> None:
        """Reconnect the node."""
        _ip("link", "set", self._veth(node_id), "up")
