"""Unit tests of the one place errors become HTTP: ApiError → response, outcomes → /call responses,
engine and control-plane exceptions → ApiError (the standalone adapters)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from controlplane.core import (
    BadRequest,
    DatabaseNotFound,
    InvalidName,
    NameNotFound,
    NamePermissionDenied,
    NotAuthorized,
    PublishFailed,
    UpdateRejected,
)
from gateway.auth import BadSignature, CredentialsRequired, MalformedCredentials, TokenExpired
from gateway.backends import CallOutcome, CallResult, PrePublish, PublishOutcome
from gateway.errors import JSON, TEXT, ApiError, from_auth_error, to_response
from gateway.http_util import parse_url_identity, query_hash
from gateway.routes_database import call_response, sats_identity, sats_u256
from hostnode.database import (
    DatabaseClosed,
    DatabaseError,
    InvalidArguments,
    LifecycleReducerCall,
    NoSuchReducer,
    ReducerOutcome,
    Status,
)
from hostnode.grpc_service import format_token
from orrery.standalone import call_result, control_error, parse_listen_addr, reducer_call_error
from sats.identity import Identity

ALICE = Identity.from_claims("localhost", "alice")


def test_api_error_responses() -> None:
    text = to_response(ApiError.text(404, "No such database."))
    assert (text.status, text.body, text.headers["Content-Type"]) == (404, b"No such database.", TEXT)
    js = to_response(ApiError.json(401, {"PermissionDenied": {"name": "n"}}))
    assert js.headers["Content-Type"] == JSON == "application/json"
    assert js.body == b'{"PermissionDenied":{"name":"n"}}'
    empty = to_response(ApiError.empty(400))
    assert empty.status == 400 and empty.body is None or empty.body == b""
    assert "Content-Type" not in ApiError.empty(400).headers
    big = to_response(ApiError.json(200, {"n": 2**127 + 1}))
    assert big.body == b'{"n":170141183460469231731687303715884105729}'
    reducer_failed = to_response(ApiError.text(530, "boom", {"spacetime-energy-used": "5"}))
    assert reducer_failed.status == 530 and reducer_failed.reason == "Reducer Failed"
    assert reducer_failed.headers["spacetime-energy-used"] == "5"


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (MalformedCredentials("Authorization is invalid: malformed token"), 400, "Authorization is invalid: malformed token"),
        (CredentialsRequired("Authorization required"), 401, "Authorization required"),
        (BadSignature("invalid token: bad"), 401, "invalid token: bad"),
        (TokenExpired("invalid token: expired"), 401, "invalid token: expired"),
    ],
)
def test_auth_errors(error: Exception, status: int, body: str) -> None:
    api = from_auth_error(error)  # type: ignore[arg-type]
    assert (api.status, api.message, api.content_type) == (status, body, TEXT)


def test_call_responses() -> None:
    ok = call_response(CallResult(CallOutcome.COMMITTED, "", 12, 34))
    assert (ok.status, ok.body) == (200, None)
    assert ok.headers["spacetime-energy-used"] == "12" and ok.headers["spacetime-execution-duration-micros"] == "34"
    cases = [
        (CallResult(CallOutcome.FAILED, "it broke", 1, 2), 530, "it broke", True),
        (CallResult(CallOutcome.OUT_OF_ENERGY, "", 1, 2), 402, "Module energy budget exhausted.", True),
        (CallResult(CallOutcome.CONNECT_REJECTED, "go away"), 403, "go away", False),
        (
            CallResult(CallOutcome.CONNECT_OUT_OF_ENERGY),
            503,
            "Insufficient energy balance to run `client_connected` reducer",
            False,
        ),
    ]
    for result, status, message, timed in cases:
        with pytest.raises(ApiError) as info:
            call_response(result)
        assert (info.value.status, info.value.message) == (status, message)
        assert ("spacetime-energy-used" in info.value.headers) is timed


def _outcome(status: Status, message: str = "") -> ReducerOutcome:
    return ReducerOutcome(status, message, "r", 1, ALICE, 7, 0, b"", 10, 20)


def test_outcomes_from_the_engine() -> None:
    assert call_result(_outcome(Status.COMMITTED)) == CallResult(CallOutcome.COMMITTED, "", 10, 20)
    assert call_result(_outcome(Status.FAILED, "m")).outcome is CallOutcome.FAILED
    assert call_result(_outcome(Status.OUT_OF_ENERGY)).outcome is CallOutcome.OUT_OF_ENERGY
    assert call_result(_outcome(Status.FAILED, "no"), connect=True) == CallResult(
        CallOutcome.CONNECT_REJECTED, "no", 10, 20
    )
    assert call_result(_outcome(Status.OUT_OF_ENERGY), connect=True).outcome is CallOutcome.CONNECT_OUT_OF_ENERGY


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (NoSuchReducer("no such reducer `x`"), 404, "No such procedure"),
        (
            LifecycleReducerCall("can't directly call special Init lifecycle reducer"),
            400,
            "can't directly call special Init lifecycle reducer",
        ),
        (InvalidArguments("invalid arguments for reducer x: at args: bad"), 400, "invalid arguments for reducer x: at args: bad"),
        (DatabaseClosed("closed"), 503, "The database is shutting down"),
        (DatabaseError("weird"), 500, "weird"),
    ],
)
def test_reducer_call_errors(error: DatabaseError, status: int, body: str) -> None:
    api = reducer_call_error(error)
    assert (api.status, api.message) == (status, body)


def test_control_plane_errors() -> None:
    assert control_error(InvalidName("invalid hyphen in database name")).message == (
        "Invalid URL: invalid hyphen in database name"
    )
    assert control_error(InvalidName("x"), path=False).message == "x"
    assert (control_error(NameNotFound("Could not resolve database `n`")).status) == 404
    assert control_error(DatabaseNotFound("No such database.")).message == "No such database."
    missing = control_error(DatabaseNotFound("database not found", body="DatabaseNotFound"))
    assert (missing.status, missing.content_type, missing.body) == (404, JSON, b'"DatabaseNotFound"')
    assert control_error(NotAuthorized("… update database")).status == 403
    denied = control_error(NamePermissionDenied("no", body={"PermissionDenied": {"name": "n"}}))
    assert (denied.status, denied.content_type) == (401, JSON)
    assert control_error(BadRequest("Clear database requires database name or identity")).status == 400
    assert control_error(PublishFailed("Failed to create the database: x")).status == 500
    assert control_error(UpdateRejected("Database update rejected: y")).message == "Database update rejected: y"


def test_bodies() -> None:
    outcome = PublishOutcome(ALICE, "created", None)
    assert outcome.to_json() == {"Success": {"domain": None, "database_identity": ALICE.to_hex(), "op": "created"}}
    assert PrePublish(automatic=False, reason="r").to_json() == {"ManualMigrate": {"reason": "r"}}
    assert PrePublish(automatic=True, plan="p", token="0x1").to_json() == {
        "AutoMigrate": {"migrate_plan": "p", "break_clients": False, "token": "0x1"}
    }
    assert sats_identity(ALICE) == {"__identity__": "0x" + ALICE.to_hex()}
    assert sats_u256("01" + "00" * 31) == "0x1"  # little-endian bytes, leading zeros stripped
    assert sats_u256("") == "0x0"


def test_url_identity_and_listen_addr() -> None:
    assert parse_url_identity(ALICE.to_hex()) == ALICE
    for bad in ("0x" + ALICE.to_hex(), ALICE.to_hex()[:-1], "zz" * 32):
        with pytest.raises(ApiError) as info:
            parse_url_identity(bad)
        assert info.value.status == 400 and info.value.message.startswith("Invalid URL: ")
    assert parse_listen_addr("127.0.0.1:3000") == ("127.0.0.1", 3000)
    assert parse_listen_addr("[::1]:0") == ("::1", 0)
    assert parse_listen_addr(":80") == ("127.0.0.1", 80)
    for bad in ("3000", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            parse_listen_addr(bad)


def test_migration_token_in_a_query() -> None:
    """``?token=`` reads what pre-publish shows (1.12: a ``Hash``, u256 in ``0x`` hex) back into bytes."""

    def token(query: str) -> bytes | None:
        return query_hash(make_mocked_request("PUT", f"/v1/database/x?{query}"), "token")

    for data in (bytes(range(32)), bytes(32), b"\xff" * 32, b"\x01" + bytes(31)):
        assert token(f"token={format_token(data)}") == data
    assert format_token(b"\x01" + bytes(31)) == "0x1"
    assert token("token=%2B0x0001") == token("token=0x1")
    assert token("policy=BreakClients") is None
    for bad, why in (
        ("", "cannot parse integer from empty string"),
        ("abc", "invalid digit found in string"),
        ("0x", "invalid digit found in string"),
        ("0X1", "invalid digit found in string"),
        ("0xabg", "invalid digit found in string"),
        ("-0x1", "invalid digit found in string"),
        ("0x1" + "0" * 64, "number too large to fit in target type"),
    ):
        with pytest.raises(ApiError) as info:
            token(f"token={bad}")
        assert (info.value.status, info.value.message) == (400, f"Failed to deserialize query string: token: {why}")
