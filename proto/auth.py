"""The cluster secret: how gateway, control plane and host nodes prove to each other that they
belong to one cluster (issue 12, item 6).

Every process of a cluster is given the same random secret (32 bytes, written as 64 hex
digits, in a file named by ``--cluster-secret-file`` or ``ORRERY_CLUSTER_SECRET_FILE``). Every
internal gRPC call carries it as ``authorization: Bearer <hex>`` call metadata, added by the
client interceptor of :func:`channel`; every internal gRPC server refuses a call without it, or
with another value, with ``UNAUTHENTICATED`` (:func:`server_interceptors`, constant-time
compare). The refusal is logged once per peer host, not once per call, so a misconfigured peer
retrying in a loop cannot flood the log.

A shared secret rather than mutual TLS: it needs no CA, no certificate rotation and no
hostname plan, it is one Kubernetes Secret, and it answers the threat in issue 12 (anything on
the pod network could call the internal ports and act as anyone). It does not encrypt traffic;
that is for mTLS or the network (a service mesh) when the pod network itself is untrusted.

Every holder of the secret is trusted alike: there is no separate gateway role. The public API
reaches host nodes only through gateways, which authenticate callers before they set
``caller_identity``; control planes and host nodes never forward a caller identity they did not
get from a gateway. So the one secret is also what "only a gateway may assert a caller
identity" rests on — keep it to the cluster's own processes (docs/cluster.md).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from proto import GRPC_OPTIONS

log = logging.getLogger(__name__)

#: The environment variable naming the secret file when ``--cluster-secret-file`` is not given.
SECRET_FILE_ENV = "ORRERY_CLUSTER_SECRET_FILE"

#: The secret file ``orrery cluster up`` keeps in its data directory.
SECRET_FILE_NAME = "cluster-secret"

SECRET_BYTES = 32
_HEADER = "authorization"
_SCHEME = "Bearer "

#: Peer hosts already logged as refused; beyond this many the set starts over (a bound, not a cache).
_MAX_LOGGED_PEERS = 1024


class SecretError(Exception):
    """The cluster secret is missing or unusable; the message says which file and why."""


@dataclass(frozen=True)
class ClusterSecret:
    """The shared secret of one cluster (64 lowercase hex digits)."""

    hex: str

    def __post_init__(self) -> None:
        if len(self.hex) != 2 * SECRET_BYTES or any(c not in "0123456789abcdef" for c in self.hex):
            raise SecretError(f"a cluster secret is {2 * SECRET_BYTES} lowercase hex digits ({SECRET_BYTES} random bytes)")

    def __repr__(self) -> str:  # never print the secret itself
        return "ClusterSecret(<hidden>)"

    @classmethod
    def generate(cls) -> ClusterSecret:
        """A new random secret."""
        return cls(secrets.token_hex(SECRET_BYTES))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ClusterSecret:
        """The secret in ``path`` (surrounding whitespace ignored, so ``echo``'s newline is fine)."""
        try:
            text = Path(path).read_text().strip()
        except OSError as e:
            raise SecretError(f"cannot read the cluster secret file {path}: {e.strerror or e}") from None
        try:
            return cls(text.lower())
        except SecretError as e:
            raise SecretError(f"{path}: {e}") from None

    @classmethod
    def ensure_file(cls, path: Path) -> ClusterSecret:
        """The secret in ``path``, first writing a new one there (mode 0600) if there is none."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(cls.generate().hex + "\n")
                f.flush()
                os.fsync(f.fileno())
        return cls.read(path)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata that carries this secret."""
        return ((_HEADER, _SCHEME + self.hex),)

    def admits(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        """Whether ``metadata`` carries this secret (compared in constant time)."""
        expected = (_SCHEME + self.hex).encode()
        for key, value in metadata or ():
            if key == _HEADER:
                got = value if isinstance(value, bytes) else value.encode()
                return hmac.compare_digest(got, expected)
        return False


def secret_from(path: str | None) -> ClusterSecret:
    """The secret named by ``path`` (a flag) or else by ``ORRERY_CLUSTER_SECRET_FILE``.

    A cluster process refuses to start without one: an unauthenticated internal port is what
    issue 12 closes, so there is no "off" switch.
    """
    path = path or os.environ.get(SECRET_FILE_ENV)
    if not path:
        raise SecretError(
            f"no cluster secret: pass --cluster-secret-file PATH or set {SECRET_FILE_ENV} "
            f"(a file holding {2 * SECRET_BYTES} hex digits, e.g. from `openssl rand -hex {SECRET_BYTES}`)"
        )
    return ClusterSecret.read(path)


# --- clients ------------------------------------------------------------------------------------


class _Authorize:
    """Adds the secret to the metadata of every call of one kind on a channel (grpc.aio files an
    interceptor under the first kind it implements only: hence one subclass per kind)."""

    def __init__(self, secret: ClusterSecret) -> None:
        self._metadata = secret.metadata()

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self._metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _AuthorizeUnaryUnary(_Authorize, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        """See :class:`grpc.aio.UnaryUnaryClientInterceptor`."""
        return await continuation(self._details(client_call_details), request)


class _AuthorizeUnaryStream(_Authorize, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        """See :class:`grpc.aio.UnaryStreamClientInterceptor`."""
        return await continuation(self._details(client_call_details), request)


class _AuthorizeStreamUnary(_Authorize, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        """See :class:`grpc.aio.StreamUnaryClientInterceptor`."""
        return await continuation(self._details(client_call_details), request_iterator)


class _AuthorizeStreamStream(_Authorize, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        """See :class:`grpc.aio.StreamStreamClientInterceptor`."""
        return await continuation(self._details(client_call_details), request_iterator)


def channel(
    address: str, secret: ClusterSecret, options: Sequence[tuple[str, Any]] = GRPC_OPTIONS
) -> grpc.aio.Channel:
    """A channel to another process of the cluster whose every call carries ``secret``."""
    kinds = (_AuthorizeUnaryUnary, _AuthorizeUnaryStream, _AuthorizeStreamUnary, _AuthorizeStreamStream)
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=[kind(secret) for kind in kinds])


# --- servers ------------------------------------------------------------------------------------


class _Gate(grpc.aio.ServerInterceptor):
    """Refuses every call that does not carry the cluster secret."""

    def __init__(self, secret: ClusterSecret) -> None:
        self._secret = secret
        self._logged: set[str] = set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Pass an authenticated call on; answer any other with ``UNAUTHENTICATED``."""
        handler = await continuation(handler_call_details)
        if handler is None or self._secret.admits(handler_call_details.invocation_metadata):  # type: ignore[attr-defined]
            return handler
        method: str = handler_call_details.method  # type: ignore[attr-defined]

        async def refuse(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            self._log_once(context.peer(), method)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this is an internal Orrery service: the call lacks the cluster secret or carries another "
                f"(give every process the same --cluster-secret-file / {SECRET_FILE_ENV})",
            )

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await refuse(context)

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterable[Any]:
            await refuse(context)
            yield  # pragma: no cover - unreachable: abort raises; this makes a generator

        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(stream, des, ser)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(unary, des, ser)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(stream, des, ser)
        return grpc.unary_unary_rpc_method_handler(unary, des, ser)

    def _log_once(self, peer: str, method: str) -> None:
        host = peer.rpartition(":")[0] or peer  # "ipv4:10.0.0.7:51234" → one entry per host, not per port
        if host in self._logged:
            return
        if len(self._logged) >= _MAX_LOGGED_PEERS:
            self._logged.clear()
        self._logged.add(host)
        log.warning(
            "refusing calls from %s: they lack the cluster secret or carry another (first: %s; logged once per host)",
            host, method,
        )  # fmt: skip


def server_interceptors(secret: ClusterSecret) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors every internal gRPC server is built with."""
    return [_Gate(secret)]
