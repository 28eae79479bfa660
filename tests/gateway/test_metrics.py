"""``/v1/metrics``, ``/healthz`` and ``/readyz`` of a standalone server, with WebSocket clients of
the Python SDK: realtime metrics (connected clients, subscriptions, requests, round trips, bytes
sent) appear under 1.12's names, and the gateway counts the HTTP requests it answered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from orrery_client import DbConnection
from tests.gateway.conftest import CHAT
from tests.observability.samples import Samples, parse_samples
from tests.servers import Client, StandaloneServer
from tests.waits import PATIENCE


async def scrape(c: Client) -> Samples:
    reply = await c.get("/v1/metrics")
    assert reply.status == 200, reply
    return parse_samples(reply.text)


async def scrape_until(c: Client, done: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``done`` holds (bounded: a hang fails after PATIENCE seconds)."""
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while True:
        samples = await scrape(c)
        if done(samples):
            return samples
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_realtime_and_gateway_metrics(server: StandaloneServer, name: str) -> None:
    async def body(c: Client) -> None:
        _, token = await c.new_identity()
        reply = await c.publish(name, CHAT, token=token)
        assert reply.status == 200, reply
        db = reply.json()["Success"]["database_identity"]
        json_conn = await DbConnection.connect(server.url, name, protocol="json")
        conn = await DbConnection.connect(server.url, name, protocol="bsatn", compression="None")
        try:
            sub = await conn.subscribe(["SELECT * FROM message", "SELECT * FROM user"])
            await sub.applied()
            for text in ("one", "two", "three"):
                result = await conn.call_reducer("send_message", text)
                assert result.status == "committed", result
            assert (await json_conn.call_reducer("set_name", "Json")).status == "committed"
            s = await scrape_until(
                c, lambda s: s.total("spacetime_websocket_requests_total", database_identity=db) >= 5,
                "the five WebSocket requests",
            )  # fmt: skip
            ident = {"database_identity": db}
            assert s.value("spacetime_worker_connected_clients", **ident) == 2
            assert s.value("spacetime_subscription_connections", **ident) == 1
            assert s.value("spacetime_active_queries", **ident) == 2
            assert s.value("spacetime_websocket_requests_total", **ident, protocol="binary") == 4
            assert s.value("spacetime_websocket_requests_total", **ident, protocol="text") == 1
            rt = {"database_identity": db, "txn_type": "Reducer", "reducer_symbol": "send_message"}
            assert s.value("spacetime_request_round_trip_time_count", **rt) == 3
            assert s.value("spacetime_request_round_trip_time_count", **ident, txn_type="Subscribe") == 1
            assert s.value("spacetime_websocket_sent_msg_size_bytes_count", db=db, workload="Subscribe") == 1
            # Each send_message: the caller's update, which is also the subscriber's (one connection).
            assert s.value("spacetime_websocket_sent_msg_size_bytes_count", db=db, workload="Update") >= 4
            assert s.value("spacetime_num_bytes_sent_to_clients_total", db=db, txn_type="Update") > 0
            assert s.value("spacetime_num_rows_scanned_total", db=db, txn_type="Subscribe") >= 0
            assert s.value("spacetime_num_txns_total", db=db, reducer="send_message", committed="true", txn_type="Reducer") == 3
        finally:
            await conn.close()
            await json_conn.close()

        # A WebSocket's request is counted when its handler returns, just after the host saw it go.
        s = await scrape_until(
            c,
            lambda s: s.value("spacetime_worker_connected_clients", database_identity=db) == 0
            and s.total("orrery_gateway_http_requests_total", route="/v1/database/{name_or_identity}/subscribe", code="101")
            >= 2,
            "the clients to go",
        )
        assert s.total("orrery_gateway_http_requests_total", route="/v1/database/{name_or_identity}", code="200") >= 1
        assert s.total("orrery_gateway_http_request_duration_seconds_count", route="/v1/metrics") >= 1
        assert s.value("orrery_gateway_websocket_connections") == 0
        assert s.total("orrery_gateway_http_requests_total", route="/v1/database/{name_or_identity}/subscribe", code="101") >= 2
        assert (await c.get("/healthz")).status == 200
        assert (await c.get("/readyz")).text == "ok\n"

    server.run(body)

