"""What a backend failure answers over HTTP: one table per backend, shared by both transports.

A failure of the host node or the control plane is a *kind* and a message (and, for the control
plane, sometimes a JSON body). The in-process adapters (:mod:`orrery.standalone`) classify the
engine's exceptions into these kinds; the gRPC clients (:mod:`gateway.grpc_backends`) receive
the kinds in ``Failure`` messages (``proto/*.proto``). Both then come here, so the two
transports give byte-identical answers. The enum values are the ``.proto`` enum numbers
(``tests/proto`` checks they agree), so a kind crosses the wire as a plain int.
"""

from __future__ import annotations

import enum
from typing import Any

from gateway.backends import CallOutcome, CallResult
from gateway.errors import TEXT, ApiError, InternalError

__all__ = [
    "ControlErrorKind",
    "HostError",
    "HostErrorKind",
    "ReducerStatus",
    "Unreachable",
    "call_result",
    "control_error",
    "host_error",
    "unavailable",
]


class HostErrorKind(enum.IntEnum):
    """``orrery.hostnode.v1.ErrorKind``."""

    NONE = 0
    NO_SUCH_DATABASE = 1
    NO_SUCH_REDUCER = 2
    LIFECYCLE_REDUCER = 3
    INVALID_ARGUMENTS = 4
    DATABASE_CLOSED = 5
    DATABASE = 6
    INVALID_PROGRAM = 7
    MIGRATION_REJECTED = 8
    SQL = 9
    INTERNAL = 10
    MIGRATION_POLICY = 11
    NOT_LEADER = 12
    NO_QUORUM = 13
    OUTCOME_UNKNOWN = 14
    STALE_EPOCH = 15
    OVERLOADED = 16


class ControlErrorKind(enum.IntEnum):
    """``orrery.controlplane.v1.ErrorKind``."""

    NONE = 0
    INVALID_NAME = 1
    NAME_NOT_FOUND = 2
    DATABASE_NOT_FOUND = 3
    NOT_AUTHORIZED = 4
    NAME_PERMISSION_DENIED = 5
    BAD_REQUEST = 6
    PUBLISH_FAILED = 7
    UPDATE_REJECTED = 8
    OTHER = 9
    INTERNAL = 10
    CONFLICT = 11
    UNAVAILABLE = 12
    NOT_ACTIVE = 13


class ReducerStatus(enum.IntEnum):
    """``orrery.hostnode.v1.Status``: how a reducer (or ``client_connected``) ended."""

    COMMITTED = 0
    FAILED = 1
    OUT_OF_ENERGY = 2


#: Host-node failures: (status, body); ``None`` means the failure's own message.
_HOST: dict[HostErrorKind, tuple[int, str | None]] = {
    HostErrorKind.NO_SUCH_DATABASE: (404, "No such database."),
    # 1.12 then looks for a procedure of that name; procedures are not supported here.
    HostErrorKind.NO_SUCH_REDUCER: (404, "No such procedure"),
    HostErrorKind.LIFECYCLE_REDUCER: (400, None),
    HostErrorKind.INVALID_ARGUMENTS: (400, None),
    HostErrorKind.DATABASE_CLOSED: (503, "The database is shutting down"),
    HostErrorKind.DATABASE: (500, None),
    # Not a module this server can run: the publisher's to fix (1.12 answers 500).
    HostErrorKind.INVALID_PROGRAM: (400, None),
    HostErrorKind.MIGRATION_REJECTED: (400, None),
    HostErrorKind.MIGRATION_POLICY: (400, None),
    HostErrorKind.SQL: (400, None),
    # Cluster mode: the gateway retries NOT_LEADER at the new leader; what reaches a client
    # means no leader could be found in time. Each body names what happened, then the node's
    # own words.
    HostErrorKind.NOT_LEADER: (503, "no leader: {}"),
    HostErrorKind.NO_QUORUM: (503, "no quorum: {}"),
    HostErrorKind.OUTCOME_UNKNOWN: (503, "the outcome is unknown: {}"),
    HostErrorKind.STALE_EPOCH: (503, "no leader: {}"),
    # Too much work waits for the database already; nothing ran (the message names the limit).
    HostErrorKind.OVERLOADED: (503, None),
}


class HostError(ApiError):
    """A host node's answer that a request failed (an :class:`ApiError` that keeps the node's
    ``kind`` and ``reason``, so cluster routing can tell a ``NOT_LEADER`` from the rest)."""

    def __init__(self, kind: HostErrorKind, reason: str, response: ApiError) -> None:
        super().__init__(response.status, response.body, response.content_type, response.headers, detail=response.detail)
        self.kind = kind
        self.reason = reason


class Unreachable(ApiError):
    """A host node or control plane could not be reached, or the connection broke mid-call: 503.

    ``may_have_run`` is False only when the request provably never left the gateway (the
    connection could not be opened); a write that may have run is "outcome unknown" and must
    never be retried or answered 200.
    """

    def __init__(self, message: str, *, may_have_run: bool) -> None:
        super().__init__(503, message.encode(), TEXT)
        self.may_have_run = may_have_run


def host_error(
    kind: HostErrorKind, message: str, *, missing: str | None = None, failed_to: str | None = None
) -> HostError:
    """The answer to a host-node failure.

    ``missing`` replaces the body of ``NO_SUCH_DATABASE`` (``/sql`` says ``module not found``);
    ``failed_to`` prefixes the message of a module that failed to load or run (``"plan the
    update"`` → ``Failed to plan the update: …``).
    """
    if kind not in _HOST:  # INTERNAL, or a kind this gateway does not know
        return HostError(kind, message, InternalError(f"host node: {message}"))
    status, body = _HOST[kind]
    if kind is HostErrorKind.NO_SUCH_DATABASE and missing is not None:
        body = missing
    elif failed_to is not None and kind in (HostErrorKind.DATABASE, HostErrorKind.INVALID_PROGRAM):
        body = f"Failed to {failed_to}: {message}"
    text = message if body is None else body.format(message)
    return HostError(kind, message, ApiError.text(status, text))


def unavailable(message: str) -> ApiError:
    """503 with a plain-text reason (no leader, no control plane, …): try again later."""
    return ApiError.text(503, message)


#: Control-plane failures: the status (bodies are the failure's message, or its JSON body).
_CONTROL: dict[ControlErrorKind, int] = {
    ControlErrorKind.INVALID_NAME: 400,
    ControlErrorKind.NAME_NOT_FOUND: 404,
    ControlErrorKind.DATABASE_NOT_FOUND: 404,
    ControlErrorKind.NOT_AUTHORIZED: 403,
    ControlErrorKind.NAME_PERMISSION_DENIED: 401,
    ControlErrorKind.BAD_REQUEST: 400,
    ControlErrorKind.PUBLISH_FAILED: 500,
    ControlErrorKind.UPDATE_REJECTED: 400,
    ControlErrorKind.OTHER: 500,
    ControlErrorKind.INTERNAL: 500,
    # Cluster mode: a racing request (two publishes of one new name, ...), a cluster that cannot
    # act now, and a standby control plane (a gateway retries at the active one first).
    ControlErrorKind.CONFLICT: 409,
    ControlErrorKind.UNAVAILABLE: 503,
    ControlErrorKind.NOT_ACTIVE: 503,
}


def control_status(kind: ControlErrorKind) -> int:
    """The HTTP status of a control-plane failure kind."""
    return _CONTROL.get(kind, 500)


def control_error(kind: ControlErrorKind, message: str, body: Any = None, *, path: bool = True) -> ApiError:
    """The answer to a control-plane failure (``body``: its JSON body, None for plain text).

    An invalid name in a URL path segment is ``Invalid URL: …`` (``path``); elsewhere (a name in
    a request body) it is the bare message.
    """
    status = control_status(kind)
    if kind is ControlErrorKind.INVALID_NAME and path:
        return ApiError.text(status, f"Invalid URL: {message}")
    if kind is ControlErrorKind.INTERNAL:
        return InternalError(f"control plane: {message}")
    if body is None:
        return ApiError.text(status, message)
    return ApiError.json(status, body)


_OUTCOMES = {
    (ReducerStatus.COMMITTED, False): CallOutcome.COMMITTED,
    (ReducerStatus.FAILED, False): CallOutcome.FAILED,
    (ReducerStatus.OUT_OF_ENERGY, False): CallOutcome.OUT_OF_ENERGY,
    (ReducerStatus.COMMITTED, True): CallOutcome.COMMITTED,
    (ReducerStatus.FAILED, True): CallOutcome.CONNECT_REJECTED,
    (ReducerStatus.OUT_OF_ENERGY, True): CallOutcome.CONNECT_OUT_OF_ENERGY,
}


def call_result(
    status: ReducerStatus, message: str, energy_used: int, duration_micros: int, *, connect: bool = False
) -> CallResult:
    """The gateway's view of a reducer outcome (``connect``: the outcome of ``client_connected``)."""
    return CallResult(_OUTCOMES[status, connect], message, energy_used, duration_micros)
