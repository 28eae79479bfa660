"""``/v1/identity``, ``/v1/ping``, health, metrics, energy, CORS and credentials, over real HTTP."""

from __future__ import annotations

import time

from gateway.auth import Claims, SigningKeys, TokenAuthority, decode_unverified
from sats.identity import Identity
from tests.gateway.conftest import CHAT
from tests.servers import Client, StandaloneServer

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def test_create_identity_and_public_key(server: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        reply = await c.post("/v1/identity")
        assert reply.status == 200 and reply.content_type == JSON
        doc = reply.json()
        claims = decode_unverified(doc["token"])
        assert doc["identity"] == claims["hex_identity"]
        assert Identity.from_claims(claims["iss"], claims["sub"]).to_hex() == doc["identity"]
        assert claims["iss"] == "localhost" and claims["aud"] == ["spacetimedb"] and claims["exp"] is None
        assert "spacetime-identity" not in reply.headers  # the anonymous middleware is /v1/database only

        key = await c.get("/v1/identity/public-key")
        assert key.status == 200 and key.content_type == "application/pem-certificate-chain"
        assert key.text.startswith("-----BEGIN PUBLIC KEY-----")
        assert key.text == (server.data_dir / "keys" / "id_ecdsa.pub").read_text()

    server.run(body)


def test_websocket_token_and_verify(server: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        ident, token = await c.new_identity()
        other, _ = await c.new_identity()
        reply = await c.post("/v1/identity/websocket-token")
        assert (reply.status, reply.text) == (401, "Authorization required")
        reply = await c.post("/v1/identity/websocket-token", token=token)
        assert reply.status == 200 and reply.content_type == JSON
        short = decode_unverified(reply.json()["token"])
        assert short["hex_identity"] == ident and short["exp"] - short["iat"] == 60

        assert (await c.get(f"/v1/identity/{ident}/verify", token=token)).status == 204
        # The short token validates too (and so does ?token=).
        assert (await c.get(f"/v1/identity/{ident}/verify", params={"token": reply.json()["token"]})).status == 204
        wrong = await c.get(f"/v1/identity/{other}/verify", token=token)
        assert (wrong.status, wrong.body) == (400, b"")
        assert (await c.get(f"/v1/identity/{ident}/verify")).status == 401
        bad = await c.get(f"/v1/identity/0x{ident}/verify", token=token)
        assert bad.status == 400 and bad.text.startswith("Invalid URL: ")

    server.run(body)


def test_databases_of_an_identity(server: StandaloneServer, name: str) -> None:
    async def body(c: Client) -> None:
        ident, token = await c.new_identity()
        empty = await c.get(f"/v1/identity/{ident}/databases")
        assert (empty.status, empty.content_type, empty.json()) == (200, JSON, {"identities": []})
        created = (await c.publish(name, CHAT, token=token)).json()["Success"]["database_identity"]
        unnamed = (await c.publish(None, CHAT, token=token)).json()["Success"]["database_identity"]
        listed = (await c.get(f"/v1/identity/{ident}/databases")).json()["identities"]
        assert sorted(listed) == sorted([created, unnamed])
        assert (await c.get("/v1/identity/nothex/databases")).status == 400

    server.run(body)


def test_ping_health_metrics_energy(server: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        ident, token = await c.new_identity()
        ping = await c.get("/v1/ping")
        assert (ping.status, ping.body) == (200, b"")
        assert (await c.get("/v1/ping", token=token)).status == 200
        assert (await c.get("/v1/ping", token="not-a-jwt")).status == 401

        health = await c.get("/v1/health")
        assert health.status == 200 and health.content_type == JSON
        assert health.json()["version"] == "1.12.0" and health.json()["schedulable"] is True

        metrics = await c.get("/v1/metrics")
        assert metrics.status == 200 and metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert 'orrery_process_info{id="",role="standalone"} 1.0' in metrics.text
        assert "# TYPE spacetime_num_txns_total counter" in metrics.text
        assert ((await c.get("/healthz")).status, (await c.get("/healthz")).text) == (200, "ok\n")
        assert ((await c.get("/readyz")).status, (await c.get("/readyz")).text) == (200, "ok\n")

        sd = await c.get("/v1/prometheus/sd_config")
        assert sd.json() == [{"targets": [server.address], "labels": {}}]

        balance = await c.get(f"/v1/energy/{ident}")
        assert (balance.status, balance.content_type, balance.json()) == (200, JSON, {"balance": "0"})
        assert (await c.post(f"/v1/energy/{ident}", params={"amount": "5"})).status == 401
        assert (await c.post(f"/v1/energy/{ident}", params={"amount": "5"}, token=token)).json() == {"balance": "0"}
        bad_amount = await c.post(f"/v1/energy/{ident}", params={"amount": "-1"}, token=token)
        assert (bad_amount.status, bad_amount.body) == (400, b"")
        assert (await c.put(f"/v1/energy/{ident}", params={"balance": "5"}, token=token)).status == 401

    server.run(body)


def test_credentials_rejections(server: StandaloneServer) -> None:
    keys = SigningKeys.load(server.data_dir / "keys")

    async def body(c: Client) -> None:
        ident, token = await c.new_identity()
        # Malformed Authorization header → 400, before any route logic.
        for header in ("Basic abc", "Bearer", "token-without-scheme"):
            reply = await c.get("/v1/ping", headers={"Authorization": header})
            assert (reply.status, reply.text) == (400, "Authorization is invalid: malformed token"), header
            reply = await c.get("/v1/database/whatever/identity", headers={"Authorization": header})
            assert reply.status == 400 and "spacetime-identity" not in reply.headers

        # Forged: same claims, signed by a key the server does not hold.
        claims = Claims.for_subject("localhost", decode_unverified(token)["sub"], issued_at=int(time.time()))
        forged = TokenAuthority(SigningKeys.generate()).mint_token(claims)
        assert (await c.get("/v1/ping", token=forged)).status == 401
        assert (await c.post(f"/v1/identity/{ident}/verify", token=forged)).status == 405
        assert (await c.get(f"/v1/identity/{ident}/verify", token=forged)).status == 401
        # Tampered payload: someone else's claims under this token's signature.
        head, _, sig = token.split(".")
        mallory = Claims.for_subject("localhost", "mallory", issued_at=1)
        other_payload = TokenAuthority(keys).mint_token(mallory).split(".")[1]
        assert (await c.get("/v1/ping", token=f"{head}.{other_payload}.{sig}")).status == 401

        # Expired: signed by the server's own key, exp an hour ago (beyond the 60 s leeway).
        past = TokenAuthority(keys, clock=lambda: time.time() - 3600)
        expired = past.websocket_token(claims).token
        reply = await c.get("/v1/ping", token=expired)
        assert reply.status == 401 and "expired" in reply.text
        db_reply = await c.publish("expired-token", CHAT, token=expired)
        assert db_reply.status == 401 and "spacetime-identity" not in db_reply.headers
        # A valid token still works.
        assert (await c.get("/v1/ping", token=token)).status == 200

    server.run(body)


def test_cors_and_generic_rejections(server: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        preflight = await c.request(
            "OPTIONS",
            "/v1/identity/websocket-token",
            headers={
                "Origin": "http://example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status == 200 and preflight.body == b""
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert preflight.headers["Access-Control-Allow-Methods"] == "*"
        assert preflight.headers["Access-Control-Allow-Headers"] == "authorization,accept,content-type"
        preflight_db = await c.request(
            "OPTIONS", "/v1/database/x/sql", headers={"Origin": "http://e", "Access-Control-Request-Method": "POST"}
        )
        assert preflight_db.status == 200

        ident = await c.post("/v1/identity", headers={"Origin": "http://example.com"})
        assert ident.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Expose-Headers" not in ident.headers

        unknown = await c.get("/v1/nope")
        assert (unknown.status, unknown.body) == (404, b"")
        assert (await c.post("/v1/identity/x/set-email")).status == 404
        wrong_method = await c.get("/v1/database")
        assert (wrong_method.status, wrong_method.body) == (405, b"")
        assert (await c.delete("/v1/identity")).status == 405

    server.run(body)
