"""The gateway's per-process state (configuration, backends, token authority) and caller auth.

Routes reach it through ``request.app[GATEWAY]``. :class:`Authenticator` implements the
credentials rules of client-api.md §2 and the anonymous identities of §3.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from gateway.auth import Claims, CredentialsRequired, TokenAuthority, parse_authorization
from gateway.backends import ControlPlaneBackend, HostNodeBackend
from gateway.metrics import GatewayStats
from sats.identity import Identity

__all__ = [
    "CALLER_KEY", "GATEWAY", "Authenticator", "Caller", "ConnectionIds", "Gateway", "GatewayConfig", "caller_of",
]  # fmt: skip

MIB = 1024 * 1024


@dataclass
class GatewayConfig:
    """Limits and identity of one gateway."""

    #: Largest module accepted by publish, pre_publish and reset.
    max_module_bytes: int = 64 * MIB
    #: Largest body of every other request (reducer args, SQL, names).
    max_body_bytes: int = 1 * MIB
    #: Addresses advertised by ``/v1/prometheus/sd_config``.
    advertise: list[str] = field(default_factory=list)
    #: Seconds between checks that a follower of ``/logs`` is still connected.
    log_follow_poll: float = 1.0
    #: Open WebSocket connections this gateway holds, in all and to one database (README,
    #: "Limits"); a handshake past either is refused with 503 before the upgrade.
    max_ws_connections: int = 10_000
    max_ws_connections_per_database: int = 4_000


@dataclass
class WsSlots:
    """The gateway's open WebSocket connections, in all and per database: a handshake takes a
    slot before the upgrade and gives it back when the connection ends, whatever ended it."""

    total: int = 0
    per_database: dict[Identity, int] = field(default_factory=dict)

    def take(self, database: Identity, config: GatewayConfig) -> str | None:
        """Take a slot for a connection to ``database``; or the reason there is none."""
        if self.total >= config.max_ws_connections:
            return (
                f"too many WebSocket connections: this server holds {self.total} "
                f"(max_ws_connections); try again later"
            )
        held = self.per_database.get(database, 0)
        if held >= config.max_ws_connections_per_database:
            return (
                f"too many WebSocket connections to this database: {held} are open "
                f"(max_ws_connections_per_database); try again later"
            )
        self.total += 1
        self.per_database[database] = held + 1
        return None

    def give_back(self, database: Identity) -> None:
        """Release a slot :meth:`take` gave for ``database``."""
        self.total -= 1
        held = self.per_database[database] - 1
        if held:
            self.per_database[database] = held
        else:
            del self.per_database[database]


@dataclass(frozen=True)
class Caller:
    """Who is making a request: a verified token, or an identity minted for it."""

    identity: Identity
    token: str
    claims: Claims
    minted: bool = False


class Authenticator:
    """Extracts and verifies credentials; verified non-expiring tokens are cached."""

    def __init__(self, authority: TokenAuthority, cache_size: int = 4096) -> None:
        self.authority = authority
        self._cache: OrderedDict[str, Claims] = OrderedDict()
        self._cache_size = cache_size
        #: The caller of each ``Authorization`` header whose token is cached above (a client
        #: sends the same header on every request: no parsing, no new Caller).
        self._callers: OrderedDict[str, Caller] = OrderedDict()

    async def verify(self, token: str) -> Claims:
        """Validate a token (raises :class:`gateway.auth.AuthError`)."""
        claims = self._cache.get(token)
        if claims is not None:
            self._cache.move_to_end(token)
            return claims
        claims = await self.authority.verify(token)
        if claims.expires_at is None:
            self._cache[token] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    async def optional(self, request: web.Request) -> Caller | None:
        """The caller if the request carries a token (validated), else None (§2.1–2.3)."""
        header = request.headers.get("Authorization")
        # The query's token counts only without the header (parse_authorization).
        return await self.from_credentials(header, request.query.get("token") if header is None else None)

    def known(self, header: str) -> Caller | None:
        """The caller of an ``Authorization`` header whose token is verified and cached already
        (None: ask :meth:`from_credentials`), without a coroutine (gateway/fast_calls.py)."""
        known = self._callers.get(header)
        if known is not None:
            self._callers.move_to_end(header)
        return known

    async def from_credentials(self, header: str | None, query_token: str | None) -> Caller | None:
        """:meth:`optional` given the ``Authorization`` header and the ``token`` query parameter."""
        if header is not None:
            known = self.known(header)
            if known is not None:
                return known
        token = parse_authorization(header, query_token)
        if token is None:
            return None
        claims = await self.verify(token)
        caller = Caller(claims.identity, token, claims)
        if header is not None and token in self._cache:
            self._callers[header] = caller
            if len(self._callers) > self._cache_size:
                self._callers.popitem(last=False)
        return caller

    async def required(self, request: web.Request) -> Caller:
        """The caller; 401 ``Authorization required`` without a token (§2.4)."""
        caller = await self.optional(request)
        if caller is None:
            raise CredentialsRequired("Authorization required")
        return caller

    async def or_anonymous(self, request: web.Request) -> Caller:
        """The caller, or a freshly minted identity for a request without a token (§3)."""
        caller = await self.optional(request)
        if caller is not None:
            return caller
        issued = self.authority.new_identity()
        return Caller(issued.identity, issued.token, issued.claims, minted=True)


class ConnectionIds:
    """Random non-zero 128-bit connection ids (1.12's ``ConnectionId::random``) for HTTP calls and
    WebSocket clients that bring none, from the OS's CSPRNG a few KiB at a time: a ``getrandom``
    call per id cost about 2 % of an HTTP call's server CPU."""

    def __init__(self, ids_per_read: int = 256) -> None:
        self._read = 16 * ids_per_read
        self._pool = b""
        self._at = 0

    def new(self) -> int:
        """The next id."""
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(self._read), 0
        self._at = at + 16
        return int.from_bytes(self._pool[at : at + 16], "little") or 1


@dataclass
class Gateway:
    """Everything a route needs."""

    config: GatewayConfig
    auth: Authenticator
    control: ControlPlaneBackend
    host: HostNodeBackend
    #: Set when the server shuts down: long-lived responses (log follow) end.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: What the gateway counts (gateway/metrics.py).
    stats: GatewayStats = field(default_factory=GatewayStats)
    #: Open WebSocket connections against the config's limits.
    ws_slots: WsSlots = field(default_factory=WsSlots)
    #: Where the connection ids of HTTP calls and id-less WebSocket clients come from.
    connection_ids: ConnectionIds = field(default_factory=ConnectionIds)


GATEWAY = web.AppKey("gateway", Gateway)
#: The caller of a ``/v1/database*`` request, set by the anonymous-auth middleware.
CALLER_KEY = web.RequestKey("caller", Caller)


def caller_of(request: web.Request) -> Caller:
    """The caller the database middleware attached to the request."""
    return request[CALLER_KEY]
