"""The host-node process of a split standalone server (``orrery.standalone --transport split``).

Started by the gateway process (:mod:`orrery.standalone_split`), never by hand: it inherits one
end of a unix ``socketpair`` (``--link-fd``), opens the data directory's control-plane store and
databases, serves the host node's and the control plane's gRPC services on free ports of
127.0.0.1 (taking only calls that carry a secret drawn here), and says where they are — and the
secret — as the first message on the link (:data:`READY_ID`). Then it serves the gateway's
WebSocket clients over the link (:func:`hostnode.link.serve_link`) until the gateway closes it or
dies, or SIGTERM; then it closes every database (checkpointed and synced) and exits.

SIGINT is ignored: Ctrl-C in a terminal reaches both processes, and the gateway, which gets it
too, closes the link once its clients are done — that is what stops this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane.core import migrate_program_hashes
from gateway.errors import ApiError
from gateway.link_backend import error_reply, reply_body
from hostnode.database import DatabaseConfig
from hostnode.http_calls import HttpCall, LinkAnswer
from hostnode.link import failure_reply, serve_link
from hostnode.metrics import HostNodeCollector
from hostnode.runtime import tune_gc_for_serving
from hostnode.service import DatabaseNotFound, HostNode, HostNodeConfig
from hostnode.worker import Overloaded
from observability.exposition import encode_text
from orrery.budget_options import add_budget_options, budgets_of
from orrery.process import configure_logging
from orrery.standalone import CALL_OUTCOMES, LocalHostNode, host_error, initial_program, start_grpc_services
from proto import link
from proto.auth import ClusterSecret
from sats.identity import Identity

__all__ = ["READY_ID", "main", "serve_node"]

log = logging.getLogger("orrery.standalone.node")

#: The request id of the node's first message on the link: a REPLY whose JSON body says where
#: its gRPC services are (``host``, ``control``) and the secret they take (``secret``).
READY_ID = 0


async def serve_node(link_fd: int, data_dir: Path, database: DatabaseConfig) -> None:
    """Run the node on the inherited link until the gateway ends it (or SIGTERM)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=link_fd))
    started = time.monotonic()
    store = await LmdbMetaStore.open(data_dir / "control" / "meta.lmdb")
    node = HostNode(HostNodeConfig(data_dir / "node", database=database))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostNodeCollector(node))
    local = LocalHostNode(node)

    #: The gateway's call outcome of each reducer status (what LinkAnswer answers with).
    outcomes: dict[object, str] = {status: outcome.value for (status, connect), outcome in CALL_OUTCOMES.items() if not connect}

    def other_answer(result: HttpCall | BaseException) -> bytes:
        """The REPLY to a call :class:`LinkAnswer` does not answer itself."""
        try:
            if isinstance(result, BaseException):
                raise result
            r = local.finish_call(result)
        except ApiError as e:
            return error_reply(e)
        except BaseException as e:  # noqa: BLE001 - the gateway gets the error as the reply
            log.error("a call on the link failed", exc_info=e)
            return failure_reply(e)
        body = link.encode_call_outcome(r.outcome.value, r.message, r.energy_used, r.duration_micros)
        if body is None:
            done = {"outcome": r.outcome.value, "message": r.message, "energy_used": r.energy_used,
                    "duration_micros": r.duration_micros}  # fmt: skip
            body = reply_body({"ok": done})
        return body

    def call(
        database: Identity, caller: Identity, connection_id: int, reducer: str, args: str,
        reply: Callable[[bytes], None],
    ) -> None:  # fmt: skip
        """An HTTP ``/call`` relayed by the gateway: ``reply`` gets its answer once the engine's
        outcome is durable (as :meth:`LocalHostNode.call` would answer it)."""
        try:
            node.call_via_http_then(
                database, reducer, lambda: node.encode_json_args(database, reducer, args), caller, connection_id,
                LinkAnswer(reply, outcomes, other_answer),
            )  # fmt: skip
        except (DatabaseNotFound, Overloaded) as e:
            reply(error_reply(host_error(e)))

    async def request(body: bytes) -> bytes:
        req = json.loads(body)
        op = req.get("op")
        if op == "metrics":
            return encode_text(registry)
        try:
            if op == "sql":
                answer = await local.sql(Identity.from_hex(req["database"]), req["query"], Identity.from_hex(req["caller"]))
                return reply_body({"ok": {"duration_micros": answer.duration_micros}}, answer.body)
        except ApiError as e:
            return error_reply(e)
        raise ValueError(f"unknown request {op!r}")

    try:
        async with contextlib.AsyncExitStack() as stack:
            await node.start()
            await migrate_program_hashes(store, initial_program(node))
            secret = ClusterSecret.generate()
            host_addr, control_addr = await start_grpc_services(stack, store, node, secret)
            hello = link.Batch()
            body = json.dumps({"host": host_addr, "control": control_addr, "secret": secret.hex}).encode()
            hello.request(link.REPLY, READY_ID, body)
            writer.write(hello.take())
            log.info("host node process ready in %.2fs", time.monotonic() - started)
            tune_gc_for_serving()
            serving = asyncio.ensure_future(serve_link(node, reader, writer, request, call))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                serving.result()  # a link that does not parse is logged by main
            else:
                log.info("stopping on SIGTERM")
                writer.close()
                await cancel_and_wait(serving)
            stopped.cancel()
    finally:
        await node.stop()
        await store.close()
        log.info("host node process stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m orrery.standalone_node`` (started by the gateway process)."""
    parser = argparse.ArgumentParser(prog="python -m orrery.standalone_node", description=__doc__.splitlines()[0])
    parser.add_argument("--link-fd", type=int, required=True, help="the inherited end of the gateway's socketpair")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_budget_options(parser)
    args = parser.parse_args(argv)
    try:
        budgets = budgets_of(args)
    except ValueError as e:
        parser.error(str(e))
    configure_logging(args.log_level)
    try:
        asyncio.run(serve_node(args.link_fd, args.data_dir, DatabaseConfig(**budgets.database_config())))
    except link.LinkError as e:
        log.error("the gateway sent a batch that does not parse: %s", e)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
