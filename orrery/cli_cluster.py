"""``orrery cluster …``: run a local cluster and operate any cluster (docs/cluster.md).

    orrery cluster up --nodes N --data-dir DIR [--listen-addr 127.0.0.1:3000]
    orrery cluster prometheus-config --data-dir DIR [--scrape-interval 15s] [--rules FILE]...
    orrery cluster status --data-dir DIR [--json]
    orrery cluster verify DB --data-dir DIR
    orrery cluster add-replica DB --to NODE --data-dir DIR
    orrery cluster move-replica DB --from NODE --to NODE --data-dir DIR
    orrery cluster transfer-leader DB --to NODE --data-dir DIR
    orrery cluster drain NODE --data-dir DIR

Every command but ``up`` and ``prometheus-config`` (which reads ``DIR/cluster.json``) talks to the
control plane's gRPC service: the one named in ``DIR/cluster.json`` (what ``up`` wrote), or
``--controlplane HOST:PORT``. Those calls carry the cluster secret: ``--cluster-secret-file``,
else ``$ORRERY_CLUSTER_SECRET_FILE``, else ``DIR/cluster-secret`` (what ``up`` wrote).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orrery.cli_errors import CliError
from orrery.secret_option import add_secret_option, secret_of

if TYPE_CHECKING:  # gRPC and the generated code come with the server extra; loaded on use
    from proto import controlplane_pb2 as cpb
    from proto import controlplane_pb2_grpc as cpb_grpc

__all__ = ["CLUSTER_COMMANDS", "add_cluster_parsers"]

T = TypeVar("T")

#: How long an operation may take unless --timeout says otherwise.
DEFAULT_TIMEOUT_S = 120.0


def add_cluster_parsers(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``orrery cluster`` and its subcommands on the top-level parser."""
    p = command("cluster", "Run a local cluster, or operate a cluster")
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", parser_class=type(p))
    csub.required = True

    def where(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data-dir", type=Path, help="the local cluster's directory (holds cluster.json)")
        q.add_argument("--controlplane", help="host:port of the control plane (instead of --data-dir)")
        add_secret_option(q)

    def timeout(q: argparse.ArgumentParser) -> None:
        q.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)")

    up = command("up", "Start etcd, a control plane, N host nodes and a gateway here, in the foreground", csub)
    up.add_argument("--nodes", type=int, default=3, help="how many host nodes (default %(default)s)")
    up.add_argument("--data-dir", type=Path, required=True, help="where the cluster keeps everything")
    up.add_argument("--listen-addr", default="127.0.0.1:3000", help="the gateway's address (default %(default)s)")
    up.add_argument("--lease-ttl", type=float, default=2.0, help="seconds of the node leases (default %(default)s)")

    pc = command("prometheus-config", "Print a Prometheus configuration that scrapes every process of a local cluster", csub)
    pc.add_argument("--data-dir", type=Path, required=True, help="the local cluster's directory (holds cluster.json)")
    pc.add_argument("--scrape-interval", default="15s", help="how often Prometheus scrapes (default %(default)s)")
    pc.add_argument(
        "--rules", action="append", default=[], metavar="FILE",
        help="a rule file for Prometheus to load (repeatable), e.g. deploy/prometheus/alerts.yaml",
    )  # fmt: skip

    st = command("status", "Nodes, databases, and where each replica is", csub)
    where(st)
    st.add_argument("--json", action="store_true", help="print the status as JSON")

    v = command("verify", "Check that every replica of a database holds the same rows", csub)
    v.add_argument("database", help="name or identity")
    where(v)
    timeout(v)

    a = command("add-replica", "Add a replica of a database on a node", csub)
    a.add_argument("database", help="name or identity")
    a.add_argument("--to", required=True, dest="to_node", help="the node to add the replica on")
    where(a)
    timeout(a)

    m = command("move-replica", "Move a replica of a database to another node", csub)
    m.add_argument("database", help="name or identity")
    m.add_argument("--from", required=True, dest="from_node", help="the node to move the replica off")
    m.add_argument("--to", required=True, dest="to_node", help="the node to move it to")
    where(m)
    timeout(m)

    t = command("transfer-leader", "Make another replica the leader of a database", csub)
    t.add_argument("database", help="name or identity")
    t.add_argument("--to", required=True, dest="to_node", help="the node to lead")
    where(t)
    timeout(t)

    d = command("drain", "Move every leadership and every replica off a node", csub)
    d.add_argument("node", help="the node id")
    where(d)
    timeout(d)


def _cluster_json(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / "cluster.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{path} does not exist: is there a cluster started with `orrery cluster up --data-dir {data_dir}`?") from None
    except ValueError as e:
        raise CliError(f"{path} is not valid JSON: {e}") from None
    return doc


def _controlplane(args: argparse.Namespace) -> str:
    if getattr(args, "controlplane", None):
        return str(args.controlplane)
    if getattr(args, "data_dir", None) is None:
        raise CliError("say where the cluster is: --data-dir DIR (of `orrery cluster up`) or --controlplane HOST:PORT")
    return str(_cluster_json(args.data_dir)["controlplane"]["address"])


def _rpc(args: argparse.Namespace, fn: Callable[[cpb_grpc.ControlPlaneStub], Awaitable[T]]) -> T:
    address = _controlplane(args)
    try:
        import grpc

        from proto import auth
        from proto import controlplane_pb2_grpc as cpb_grpc
    except ImportError as e:
        raise CliError(f"cluster commands need the server extra: pip install 'orrery[server]' ({e})") from None
    try:
        secret = secret_of(args, getattr(args, "data_dir", None))
    except ValueError as e:
        raise CliError(str(e)) from None

    async def go() -> T:
        async with auth.channel(address, secret) as channel:
            return await fn(cpb_grpc.ControlPlaneStub(channel))

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as e:
        raise CliError(f"the control plane at {address} did not answer: {e.code().name}: {e.details()}") from None


def _pb() -> Any:
    """The control plane's generated messages (server extra)."""
    try:
        from proto import controlplane_pb2
    except ImportError as e:
        raise CliError(f"cluster commands need the server extra: pip install 'orrery[server]' ({e})") from None
    return controlplane_pb2


def _check(failure: cpb.Failure) -> None:
    if failure.kind:
        raise CliError(failure.message)


def _deadline(args: argparse.Namespace) -> float:
    return float(args.timeout) + 10.0


def cmd_up(session: Any, args: argparse.Namespace) -> int:
    """Start the local cluster, print where everything is, wait for Ctrl-C, stop everything."""
    from orrery.cluster_local import ClusterError, LocalCluster

    if args.nodes < 1:
        raise CliError("--nodes must be at least 1")
    cluster = LocalCluster(
        args.data_dir, nodes=args.nodes, listen_addr=args.listen_addr, lease_ttl=args.lease_ttl,
        progress=lambda msg: session.note(msg),
    )  # fmt: skip
    stop = {"now": False}

    def on_signal(_sig: int, _frame: object) -> None:
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            cluster.up()
        except ClusterError as e:
            raise CliError(str(e)) from None
        doc = cluster.describe()
        session.print(f"etcd          {doc['etcd']['endpoints']}  (pid {doc['etcd']['pid']}; metrics {doc['etcd']['metrics']})")
        cp = doc["controlplane"]
        session.print(f"control plane {cp['address']}  (pid {cp['pid']}; metrics {cp['metrics']})")
        for n in doc["nodes"]:
            session.print(f"host node     {n['id']} at {n['address']}  (pid {n['pid']}; metrics {n['metrics']})")
        gw = doc["gateway"]
        session.print(f"gateway       {gw['url']}  (pid {gw['pid']}; metrics {gw['metrics']})")
        session.print(
            f"logs in {cluster.dir / 'logs'}; {cluster.dir / 'cluster.json'} has every process's command and "
            "metrics URL (each process also answers /healthz and /readyz there)"
        )
        session.print(
            f"try: orrery server add local {cluster.gateway_url} --default; "
            f"orrery cluster status --data-dir {args.data_dir}"
        )
        session.print("Ctrl-C stops the cluster.")
        while not stop["now"]:
            time.sleep(0.2)
            for proc in cluster.procs.values():
                if proc.popen is not None and not proc.alive() and not proc.extra.get("reported"):
                    proc.extra["reported"] = True
                    session.note(f"{proc.name} exited (code {proc.popen.returncode}); restart it with its argv in cluster.json")
        session.note("stopping the cluster")
    finally:
        cluster.down()
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def cmd_prometheus_config(session: Any, args: argparse.Namespace) -> int:
    """Print a Prometheus configuration scraping every process of the local cluster."""
    from orrery.monitoring import prometheus_config, render

    doc = _cluster_json(args.data_dir)
    rules = [str(Path(r).resolve()) for r in args.rules]
    session.print(render(prometheus_config(doc, scrape_interval=args.scrape_interval, rule_files=rules)).rstrip("\n"))
    return 0


def cmd_status(session: Any, args: argparse.Namespace) -> int:
    """Nodes, databases and replicas (a table, or ``--json``)."""
    resp = _rpc(args, lambda stub: stub.ClusterStatus(_pb().ClusterStatusRequest(), timeout=30))
    _check(resp.failure)
    doc = json.loads(resp.json)
    if args.json:
        session.print(json.dumps(doc, indent=2))
        return 0
    session.print("NODE          ADDRESS                 ALIVE")
    for n in doc.get("nodes", []):
        session.print(f"{n['id']:<13} {n['address']:<23} {'yes' if n.get('alive') else 'NO'}")
    for db in doc.get("databases", []):
        names = ", ".join(db.get("names") or []) or "-"
        session.print("")
        session.print(f"database {db['identity']}  names: {names}  epoch: {db.get('epoch')}")
        session.print("  NODE          ROLE       DURABLE      LAG")
        for r in db.get("replicas", []):
            durable, lag = r.get("durable_offset"), r.get("lag")
            session.print(
                f"  {r['node']:<13} {r.get('role') or '-':<10} {'-' if durable is None else durable:<12} "
                f"{'-' if lag is None else lag}"
            )
    return 0


def _steps(session: Any, resp: cpb.OperationResponse) -> int:
    for step in resp.steps:
        session.print(step)
    _check(resp.failure)
    return 0


def cmd_verify(session: Any, args: argparse.Namespace) -> int:
    """Compare every replica's table digest at one committed offset (exit 1 when they differ)."""
    ms = int(args.timeout * 1000)
    resp = _rpc(
        args,
        lambda stub: stub.Verify(_pb().VerifyRequest(name_or_identity=args.database, timeout_ms=ms), timeout=_deadline(args)),
    )
    _check(resp.failure)
    session.print(f"offset {resp.offset}")
    for r in resp.replicas:
        session.print(f"  {r.node_id:<13} {r.digest or 'ERROR ' + r.error}  rows {r.rows}")
    if resp.agree:
        session.print("all replicas agree")
        return 0
    answered = {r.digest for r in resp.replicas if r.digest}
    missing = [r.node_id for r in resp.replicas if not r.digest]
    if len(answered) <= 1 and missing:
        session.note(
            f"Error: {', '.join(missing)} could not be checked; "
            + ("the replicas that answered agree" if answered else "no replica answered")
        )
    else:
        session.note("Error: the replicas do not agree")
    return 1


def cmd_add_replica(session: Any, args: argparse.Namespace) -> int:
    """Add a replica on a node."""
    req = _pb().ReplicaChangeRequest(name_or_identity=args.database, to_node=args.to_node, timeout_ms=int(args.timeout * 1000))
    return _steps(session, _rpc(args, lambda stub: stub.AddReplica(req, timeout=_deadline(args))))


def cmd_move_replica(session: Any, args: argparse.Namespace) -> int:
    """Move a replica between nodes."""
    req = _pb().ReplicaChangeRequest(
        name_or_identity=args.database, from_node=args.from_node, to_node=args.to_node,
        timeout_ms=int(args.timeout * 1000),
    )  # fmt: skip
    return _steps(session, _rpc(args, lambda stub: stub.MoveReplica(req, timeout=_deadline(args))))


def cmd_transfer_leader(session: Any, args: argparse.Namespace) -> int:
    """Hand leadership to another replica."""
    req = _pb().TransferLeaderRequest(name_or_identity=args.database, to_node=args.to_node, timeout_ms=int(args.timeout * 1000))
    return _steps(session, _rpc(args, lambda stub: stub.TransferLeader(req, timeout=_deadline(args))))


def cmd_drain(session: Any, args: argparse.Namespace) -> int:
    """Empty a node."""
    req = _pb().DrainRequest(node_id=args.node, timeout_ms=int(args.timeout * 1000))
    return _steps(session, _rpc(args, lambda stub: stub.Drain(req, timeout=_deadline(args))))


CLUSTER_COMMANDS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "cluster up": cmd_up,
    "cluster prometheus-config": cmd_prometheus_config,
    "cluster status": cmd_status,
    "cluster verify": cmd_verify,
    "cluster add-replica": cmd_add_replica,
    "cluster move-replica": cmd_move_replica,
    "cluster transfer-leader": cmd_transfer_leader,
    "cluster drain": cmd_drain,
}

