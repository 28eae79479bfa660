"""A whole cluster on one machine: etcd, a control plane, N host nodes and a gateway, each its
own process on 127.0.0.1 (``orrery cluster up``; the cluster tests use the same code).

Every process writes its log to ``DIR/logs/<name>.log``; ``DIR/cluster.json`` says where each one
is, where Prometheus scrapes it (``metrics``) and the exact command that restarts it with its data::

    {"gateway": {"url", "metrics", "pid", "argv", "log"}, "etcd": {"endpoints", "metrics", "pid", "argv", "log"},
     "controlplane": {"address", "metrics", "pid", "argv", "log"},
     "nodes": [{"id", "address", "metrics", "pid", "argv", "log"}]}

Every Orrery process gets a ``--metrics-addr`` of its own (``/metrics``, ``/healthz``,
``/readyz``); the gateway's ``metrics`` entry is its public ``/v1/metrics``, and etcd's is etcd's
own ``/metrics``.

The first ``up`` also writes the cluster secret, ``DIR/cluster-secret`` (mode 0600; proto/auth.py),
and every Orrery process gets ``--cluster-secret-file`` naming it: their gRPC calls to each other
carry it, and calls without it are refused. ``orrery cluster status --data-dir DIR`` finds it there.

Ports are chosen once, on the first ``up`` of a data directory, and kept: a cluster brought up
again from the same directory comes back at the same addresses with its data. Nothing is
restarted automatically: a process that dies stays dead until someone runs its ``argv``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # gRPC comes with the server extra; loaded on use
    from proto.auth import ClusterSecret

__all__ = ["ClusterError", "LocalCluster", "NodeNetwork", "Proc", "free_port", "owns_listener"]

ETCD_PREFIX = "/orrery"
_SIGTERM = signal.SIGTERM  # (Proc.signal shadows the module inside the class)
#: ``ports`` keys of the metrics listeners: ``metrics:<process name>``.
METRICS_PORT = "metrics:"


class ClusterError(Exception):
    """A process of the local cluster did not start, or a command about it cannot be done."""


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, below the kernel's source-port range when there is
    room: a port handed out by ``bind(0)`` comes from that range, and any outgoing connection may
    take it as its source port before the process that should listen on it starts."""
    low, _ = _ephemeral_ports()
    rng = random.SystemRandom()
    for _ in range(256):
        port = rng.randrange(10_000, low) if low > 11_000 else 0
        if port in _HANDED_OUT:  # not listened on yet, but promised to a process of ours
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _HANDED_OUT.add(port)
        return port
    raise ClusterError("no free TCP port found")


#: Every port :func:`free_port` returned in this process: a cluster picks all its ports before its
#: processes listen, so a random pick must not repeat one it (or another cluster) already holds.
_HANDED_OUT: set[int] = set()


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def owns_listener(pid: int, address: str) -> bool:
    """Whether process ``pid`` holds the socket listening on ``address`` (``host:port``, IPv4).

    A port picked free can be taken by another program before ours binds it; ours then fails to
    start while the other one answers in its place. Read from Linux's /proc (the socket tables of
    the process's own network namespace); True where /proc cannot tell."""
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return True
    local = {f"{struct.unpack('=I', packed)[0]:08X}:{port:04X}", f"00000000:{port:04X}"}
    inodes: set[str] = set()
    tables = 0
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        tables += 1
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # not LISTEN
                continue
            if fields[1] in local or (table.endswith("6") and fields[1].endswith(f":{port:04X}")):
                inodes.add(fields[9])
    if not tables:  # no such process, or no /proc to tell
        return not Path("/proc/self/net/tcp").exists()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False  # gone (or not ours to look at)
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


def _orrery_argv() -> list[str]:
    """How to run this installation's ``orrery`` command."""
    return [sys.executable, "-m", "orrery"]


@dataclass
class Proc:
    """One process of the cluster."""

    name: str
    argv: list[str]
    log: Path
    #: What to wait for before the process counts as up: an address to connect to or a URL.
    ready: str
    popen: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The process id (0 when not running)."""
        return self.popen.pid if self.popen is not None else 0

    def alive(self) -> bool:
        """Whether the process is running (a SIGSTOPped one counts as running)."""
        return self.popen is not None and self.popen.poll() is None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the process (its output appends to its log)."""
        if self.alive():
            raise ClusterError(f"{self.name} is already running (pid {self.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGKILL, SIGSTOP, SIGCONT, SIGTERM, ...)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the process answers, or fail with the tail of its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise ClusterError(f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.05)
        raise ClusterError(f"{self.name} did not become ready within {timeout:g} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        if self.ready.startswith("http"):
            address = urllib.parse.urlsplit(self.ready).netloc
            try:
                with urllib.request.urlopen(self.ready, timeout=1) as r:
                    if r.status != 200:
                        return False
            except OSError:
                return False
        else:
            address = self.ready
            if not _port_open(address):
                return False
        # Another program may answer on our port (ours then exits: it could not bind it).
        return self.popen is None or owns_listener(self.popen.pid, address)

    def stop(self, timeout: float = 10.0, sig: int = _SIGTERM) -> None:
        """``sig`` (SIGTERM), then SIGKILL after ``timeout``; a stopped (SIGSTOP) process is
        continued first."""
        p = self.popen
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGCONT)
            p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def kill(self) -> None:
        """SIGKILL and reap."""
        p = self.popen
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class NodeNetwork(Protocol):
    """Host nodes in a network of their own (each in a network namespace), for partition tests."""

    #: The address host nodes reach etcd at.
    etcd_host: str

    def host_of(self, node_id: str) -> str:
        """The IP address a host node listens on."""
        ...

    def wrap(self, node_id: str, argv: list[str]) -> list[str]:
        """The command that runs ``argv`` inside the node's network."""
        ...


class LocalCluster:
    """etcd + control plane + ``nodes`` host nodes + a gateway under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        nodes: int = 3,
        listen_addr: str = "127.0.0.1:3000",
        lease_ttl: float = 2.0,
        controlplane_lease_ttl: float | None = None,
        fast_etcd: bool = False,
        etcd_bin: str = "etcd",
        extra_env: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        network: NodeNetwork | None = None,
        hostnode_args: Sequence[str] = (),
    ) -> None:
        self.dir = Path(data_dir).resolve()
        #: More command-line options for every host node (e.g. ``--time-budget``).
        self.hostnode_args = list(hostnode_args)
        #: Where host nodes live when not on 127.0.0.1 (network namespaces of a fault test).
        self.network = network
        self.lease_ttl = lease_ttl
        #: The control plane's lease (default: the nodes'); it stops acting when the lease lapses.
        self.controlplane_lease_ttl = lease_ttl if controlplane_lease_ttl is None else controlplane_lease_ttl
        self.fast_etcd = fast_etcd
        self.etcd_bin = etcd_bin
        self.env = {**os.environ, **(extra_env or {})}
        self.progress = progress or (lambda _msg: None)
        saved = self._load_ports()
        self.ports: dict[str, int] = saved or {}
        host, _, port = listen_addr.rpartition(":")
        self.host = host or "127.0.0.1"
        if not saved:
            self.ports = {
                "gateway": int(port) if port and port != "0" else free_port(),
                "etcd": free_port(),
                "etcd_peer": free_port(),
                "controlplane": free_port(),
            }
        n_saved = sum(1 for k in self.ports if k.startswith("node-"))
        for i in range(1, max(nodes, n_saved) + 1):
            self.ports.setdefault(f"node-{i}", free_port())
        for name in ["gateway", "controlplane", *self.node_ids()]:  # (older cluster.json files lack them)
            self.ports.setdefault(METRICS_PORT + name, free_port())
        self.procs: dict[str, Proc] = {}
        self._build()

    # --- layout ---------------------------------------------------------------------------------

    @property
    def etcd_endpoints(self) -> str:
        """Client endpoints of the cluster's etcd."""
        return f"127.0.0.1:{self.ports['etcd']}"

    @property
    def gateway_url(self) -> str:
        """The public HTTP API."""
        return f"http://{self.host}:{self.ports['gateway']}"

    @property
    def controlplane_address(self) -> str:
        """The control plane's gRPC address."""
        return f"127.0.0.1:{self.ports['controlplane']}"

    @property
    def secret_file(self) -> Path:
        """The file holding the cluster secret every process is given."""
        from proto.auth import SECRET_FILE_NAME

        return self.dir / SECRET_FILE_NAME

    def secret(self) -> ClusterSecret:
        """The cluster secret (written by the first :meth:`up`)."""
        from proto.auth import ClusterSecret

        return ClusterSecret.read(self.secret_file)

    def node_ids(self) -> list[str]:
        """Every host node's id, in order."""
        return sorted((k for k in self.ports if k.startswith("node-")), key=lambda k: int(k.split("-")[1]))

    def node_address(self, node_id: str) -> str:
        """A host node's gRPC address."""
        return f"{self._node_host(node_id)}:{self.ports[node_id]}"

    def _node_host(self, node_id: str) -> str:
        return self.network.host_of(node_id) if self.network is not None else "127.0.0.1"

    def metrics_address(self, name: str) -> str:
        """``host:port`` of a process's ``--metrics-addr`` (``name``: gateway, controlplane, node-N)."""
        host = self._node_host(name) if name.startswith("node-") else "127.0.0.1"
        return f"{host}:{self.ports[METRICS_PORT + name]}"

    def metrics_url(self, name: str) -> str:
        """Where Prometheus scrapes a process (``name``: etcd, gateway, controlplane, node-N)."""
        if name == "gateway":
            return f"{self.gateway_url}/v1/metrics"
        if name == "etcd":
            return f"http://{self.etcd_endpoints}/metrics"
        return f"http://{self.metrics_address(name)}/metrics"

    def _load_ports(self) -> dict[str, int] | None:
        try:
            doc = json.loads((self.dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        ports = doc.get("ports")
        return {k: int(v) for k, v in ports.items()} if isinstance(ports, dict) else None

    def _build(self) -> None:
        logs = self.dir / "logs"
        fast = ["--heartbeat-interval", "10", "--election-timeout", "100"] if self.fast_etcd else []
        peer = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        listen = client
        node_etcd = self.etcd_endpoints
        if self.network is not None:  # nodes reach etcd across their namespaces' bridge
            listen += f",http://{self.network.etcd_host}:{self.ports['etcd']}"
            node_etcd = f"{self.network.etcd_host}:{self.ports['etcd']}"
        self.procs["etcd"] = Proc(
            "etcd",
            [
                self.etcd_bin, "--name", "orrery", "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", listen, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"orrery={peer}", "--initial-cluster-state", "new",
                *fast, "--log-level", "error", "--logger", "zap",
            ],
            logs / "etcd.log",
            f"{client}/health",
        )  # fmt: skip
        secret = ["--cluster-secret-file", str(self.secret_file)]
        common = ["--etcd", self.etcd_endpoints, "--etcd-prefix", ETCD_PREFIX, *secret]
        self.procs["controlplane"] = Proc(
            "controlplane",
            [*_orrery_argv(), "controlplane", "--id", "controlplane-1", "--listen-addr", self.controlplane_address, *common,
             "--lease-ttl", f"{self.controlplane_lease_ttl:g}", "--metrics-addr", self.metrics_address("controlplane")],
            logs / "controlplane.log",
            self.controlplane_address,
        )  # fmt: skip
        for node_id in self.node_ids():
            argv = [
                *_orrery_argv(), "hostnode", "--node-id", node_id, "--data-dir", str(self.dir / "nodes" / node_id),
                "--listen-addr", self.node_address(node_id), "--etcd", node_etcd, "--etcd-prefix", ETCD_PREFIX,
                "--lease-ttl", f"{self.lease_ttl:g}", "--metrics-addr", self.metrics_address(node_id), *secret,
                *self.hostnode_args,
            ]  # fmt: skip
            self.procs[node_id] = Proc(
                node_id,
                self.network.wrap(node_id, argv) if self.network is not None else argv,
                logs / f"{node_id}.log",
                self.node_address(node_id),
            )  # fmt: skip
        self.procs["gateway"] = Proc(
            "gateway",
            [*_orrery_argv(), "gateway", "--listen-addr", f"{self.host}:{self.ports['gateway']}", *common,
             "--keys-dir", str(self.dir / "keys"), "--metrics-addr", self.metrics_address("gateway")],
            logs / "gateway.log",
            f"{self.gateway_url}/v1/ping",
        )  # fmt: skip

    # --- running --------------------------------------------------------------------------------

    def up(self, timeout: float = 60.0) -> None:
        """Start everything (etcd first, the gateway last), waiting for each to answer."""
        from proto.auth import ClusterSecret

        self.dir.mkdir(parents=True, exist_ok=True)
        ClusterSecret.ensure_file(self.secret_file)
        order = ["etcd", "controlplane", *self.node_ids(), "gateway"]
        try:
            for name in order:
                proc = self.procs[name]
                if proc.alive():
                    continue
                self.progress(f"starting {name}")
                proc.start(self.env)
                if name in ("etcd", "controlplane"):
                    proc.wait_ready(timeout)
            for name in order[2:]:
                self.procs[name].wait_ready(timeout)
            self.wait_settled(timeout)
        except BaseException:
            self.down()
            raise
        self.write_json()

    def wait_settled(self, timeout: float) -> None:
        """Wait until the cluster can serve: a control plane is active and the gateway sees every
        running host node live. (A process answering on its port has not necessarily registered
        in etcd yet: a publish asking for 3 replicas right then would find fewer live nodes.)"""
        deadline = time.monotonic() + timeout
        wanted = {n for n in self.node_ids() if self.procs[n].alive()}
        while True:
            for proc in self.procs.values():
                if proc.popen is not None and proc.popen.poll() is not None and proc.name in ("etcd", "gateway"):
                    raise ClusterError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.log_tail()}")
            if self._controlplane_active() and wanted <= self._live_nodes():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the cluster did not settle within {timeout:g} s (control plane active: "
                    f"{self._controlplane_active()}, live nodes: {sorted(self._live_nodes())} of {sorted(wanted)})"
                )
            time.sleep(0.05)

    def _controlplane_active(self) -> bool:
        """Whether etcd holds the active control plane's key (its v3 JSON gateway)."""
        key = base64.b64encode(f"{ETCD_PREFIX}/controlplane/leader".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['etcd']}/v3/kv/range", data=json.dumps({"key": key}).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as r:
                return bool(json.load(r).get("kvs"))
        except (OSError, ValueError):
            return False

    def _live_nodes(self) -> set[str]:
        """The host nodes the gateway sees live (``/v1/health``)."""
        try:
            with urllib.request.urlopen(f"{self.gateway_url}/v1/health", timeout=1) as r:
                return {str(n) for n in json.load(r).get("nodes", [])}
        except (OSError, ValueError):
            return set()

    def down(self, timeout: float = 10.0) -> None:
        """Stop everything (the gateway first, etcd last). Host nodes get SIGINT, which stops
        them at once: SIGTERM would first hand their leaderships to nodes about to stop too."""
        for name in ["gateway", *self.node_ids(), "controlplane", "etcd"]:
            self.procs[name].stop(timeout, signal.SIGINT if name.startswith("node-") else signal.SIGTERM)

    def __enter__(self) -> LocalCluster:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a process that died (or was killed) again, with its data."""
        proc = self.procs[name]
        proc.start(self.env)
        proc.wait_ready(timeout)
        self.write_json()

    def running(self) -> Iterator[Proc]:
        """The processes that are alive."""
        return (p for p in self.procs.values() if p.alive())

    def describe(self) -> dict[str, Any]:
        """The ``cluster.json`` document."""

        def entry(name: str, **kw: Any) -> dict[str, Any]:
            p = self.procs[name]
            return {**kw, "metrics": self.metrics_url(name), "pid": p.pid, "argv": p.argv, "log": str(p.log)}

        return {
            "gateway": entry("gateway", url=self.gateway_url),
            "etcd": entry("etcd", endpoints=self.etcd_endpoints, prefix=ETCD_PREFIX),
            "controlplane": entry("controlplane", address=self.controlplane_address),
            "nodes": [entry(n, id=n, address=self.node_address(n)) for n in self.node_ids()],
            "ports": self.ports,
        }

    def write_json(self) -> Path:
        """Write ``DIR/cluster.json`` (atomically) and return its path."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "cluster.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(tmp, path)
        return path
