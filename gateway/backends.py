"""What the gateway needs from the control plane and the host nodes, as two narrow Protocols.

The gateway never imports :mod:`controlplane` or :mod:`hostnode` (DESIGN.md): standalone mode
plugs in-process adapters in here (:mod:`orrery.standalone`), cluster mode plugs gRPC clients.
Implementations raise :class:`gateway.errors.ApiError` carrying the exact 1.12 status and body
for every failure a client can act on, and return the plain dataclasses below; what a reducer
*did* (committed, failed, ran out of energy, was refused by ``client_connected``) is a value,
:class:`CallResult`, that the route turns into a response.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sats.identity import Identity

__all__ = [
    "CallOutcome",
    "CallResult",
    "ControlPlaneBackend",
    "DatabaseInfo",
    "HostNodeBackend",
    "PrePublish",
    "PublishOutcome",
    "SqlAnswer",
    "WsParams",
    "WsSession",
]


@dataclass(frozen=True)
class DatabaseInfo:
    """A database the control plane knows."""

    identity: Identity
    owner: Identity
    host_type: str = "Wasm"
    #: Hex digest of the first program published (served as SATS u256 by db_info).
    initial_program_hash: str = ""


@dataclass(frozen=True)
class PublishOutcome:
    """A successful publish or reset: ``{"Success":{…}}``."""

    identity: Identity
    op: str  # "created" | "updated"
    domain: str | None

    def to_json(self) -> dict[str, Any]:
        """The 1.12 ``PublishResult`` body."""
        return {"Success": {"domain": self.domain, "database_identity": self.identity.to_hex(), "op": self.op}}


class CallOutcome(enum.Enum):
    """How an HTTP reducer call ended (client-api.md §6.8)."""

    COMMITTED = "committed"
    FAILED = "failed"
    OUT_OF_ENERGY = "out_of_energy"
    #: ``client_connected`` returned an error: the call never ran.
    CONNECT_REJECTED = "connect_rejected"
    #: ``client_connected`` ran out of energy.
    CONNECT_OUT_OF_ENERGY = "connect_out_of_energy"


@dataclass(frozen=True)
class CallResult:
    """The outcome of ``POST …/call/:reducer`` once the reducer (or the connect hook) ran."""

    outcome: CallOutcome
    message: str = ""
    energy_used: int = 0
    duration_micros: int = 0


@dataclass(frozen=True)
class SqlAnswer:
    """A rendered SQL response body (the JSON array of sql-and-subscriptions.md A.7)."""

    body: bytes
    duration_micros: int


@dataclass(frozen=True)
class PrePublish:
    """What republishing a module would do (``POST …/pre_publish``)."""

    #: True: an automatic migration exists (``plan``, ``token``); False: ``reason`` says why not.
    automatic: bool
    plan: str = ""
    break_clients: bool = False
    token: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The 1.12 ``PrePublishResult`` body."""
        if self.automatic:
            return {
                "AutoMigrate": {"migrate_plan": self.plan, "break_clients": self.break_clients, "token": self.token}
            }
        return {"ManualMigrate": {"reason": self.reason}}


@dataclass(frozen=True)
class WsParams:
    """A WebSocket client as the ``/subscribe`` handshake established it (client-api.md §9)."""

    identity: Identity
    #: The exact token the connection authenticated with (a minted one for anonymous clients).
    token: str
    connection_id: int
    #: ``v1.json.spacetimedb`` (True) or ``v1.bsatn.spacetimedb``.
    json: bool
    #: ``None`` | ``Gzip`` | ``Brotli``.
    compression: str
    light: bool
    confirmed: bool
    #: The token's payload JSON (what the module's ``get_jwt`` sees).
    jwt_payload: bytes | None = None


class WsSession(Protocol):
    """One connected WebSocket client on its host node. The gateway relays frames without
    decoding rows: every frame it receives goes to :meth:`handle`, every frame :meth:`recv`
    returns goes to the socket, and :meth:`close` runs once when the socket ends, however."""

    close_code: int
    close_reason: str
    #: Set by the gateway's writer while it waits in :meth:`recv_many`: frames that are ready to
    #: go while nothing is queued before them are handed to it at once, in order (no task wakes
    #: per frame; at a fan-out, none per subscriber). It writes them and returns True, or returns
    #: False (a closing or full socket) to have them queued as usual. None: always queue.
    sink: Callable[[list[bytes | str]], bool] | None

    def handle(self, frame: bytes | str) -> str | None:
        """Queue one client frame; a malformed one returns the 1011 close reason."""
        ...

    async def recv(self) -> bytes | str | None:
        """The next server frame (``IdentityToken`` first); None when the server ends the
        connection (then close with :attr:`close_code` / :attr:`close_reason`)."""
        ...

    def handle_many(self, frames: Sequence[bytes | str]) -> str | None:
        """:meth:`handle` for frames received together (one trip to the host node); the close
        reason of the first malformed one (the frames before it are still handled)."""
        ...

    async def recv_many(self) -> list[bytes | str] | None:
        """Every server frame queued so far, at least one, in order; None as :meth:`recv`."""
        ...

    async def wait_closed(self) -> None:
        """Return once the server ended the connection (a writer blocked on a slow socket stops)."""
        ...

    async def close(self) -> None:
        """The socket is gone: drop the subscriptions and run ``client_disconnected``."""
        ...


class ControlPlaneBackend(Protocol):
    """Databases, names and owners. ``name_or_identity`` is the raw (percent-decoded) path segment."""

    async def resolve(self, name_or_identity: str) -> Identity:
        """The identity a path names (identities are not checked for existence); 400/404 errors."""
        ...

    async def database(self, name_or_identity: str) -> DatabaseInfo:
        """Resolve and load; 404 ``No such database.`` when there is none."""
        ...

    async def publish(
        self,
        caller: Identity,
        name_or_identity: str | None,
        program: bytes,
        *,
        clear: bool,
        break_clients: bool = False,
        token: bytes | None = None,
        num_replicas: int | None = None,
    ) -> PublishOutcome:
        """Create or update (client-api.md §6.2), with its owner check and migration policy:
        an update that disconnects the clients needs ``break_clients`` and ``token``, the 32
        bytes of this update's pre-publish token (otherwise 400). ``num_replicas`` is the
        publish's replication factor (None: the server's default; a single node ignores it)."""
        ...

    async def reset(self, caller: Identity, name_or_identity: str, program: bytes | None) -> PublishOutcome:
        """Wipe the data and reinstall (the given program, or the current one); owner only."""
        ...

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """Delete a database (owner only; idempotent for identities with no database)."""
        ...

    async def names(self, identity: Identity) -> list[str]:
        """Every name that points at the database."""
        ...

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """``POST …/names``: the ``{"Success":…}`` body."""
        ...

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """``PUT …/names``: replace every name (owner only)."""
        ...

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """Identities of the databases ``owner`` owns."""
        ...

    async def node_ids(self) -> Sequence[int | str]:
        """The live host nodes that can run databases (``/v1/health``): their ids."""
        ...


class HostNodeBackend(Protocol):
    """The host node running a database (in cluster mode: its leader)."""

    async def call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> CallResult:
        """HTTP call semantics: connect → reducer (args as SATS-JSON text) → disconnect."""
        ...

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        """Run one SQL statement; 400 with the engine's text on any error."""
        ...

    async def schema(self, database: Identity) -> Any:
        """The ``RawModuleDefV9`` SATS-JSON of the running module."""
        ...

    def logs(self, database: Identity, num_lines: int | None, follow: bool) -> AsyncGenerator[str, None]:
        """The last ``num_lines`` log lines (all when None), then — with ``follow`` — new ones forever.

        With ``follow`` the first item arrives once the follower is registered (no line written
        after it is missed): the first line of the tail, or ``""`` when the tail is empty (a log
        line is never empty otherwise). Errors (no such database) come with the first item. The
        consumer closes the generator (``aclose``) when it stops reading.
        """
        ...

    async def pre_publish(self, database: Identity, program: bytes) -> PrePublish:
        """Plan the update of the running module to ``program``; 500 when it cannot be planned."""
        ...

    async def connect(self, database: Identity, params: WsParams) -> WsSession | None:
        """A WebSocket client: runs ``client_connected``; None when the module rejected it
        (the gateway then drops the socket without a close frame)."""
        ...
