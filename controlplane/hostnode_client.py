"""A :class:`controlplane.core.HostNodeClient` over the host node's gRPC service.

The control plane drives remote host nodes through this (install, delete, reset). A
``Failure`` answer becomes an exception whose text is the node's message, so the control plane
words its errors exactly as it does over an in-process :class:`hostnode.service.HostNode`; the
exception classes keep the names :class:`ControlPlane` recognises (``MigrationError``,
``MigrationPolicyError``, ``DatabaseNotFound``).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from sats.identity import Identity

__all__ = [
    "DatabaseNotFound",
    "GrpcHostNodeClient",
    "HostNodeFailure",
    "Installed",
    "MigrationError",
    "MigrationPolicyError",
]


class HostNodeFailure(Exception):
    """The host node refused a request; ``kind`` is the ``ErrorKind``, ``str()`` the node's message."""

    def __init__(self, kind: int, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class MigrationError(HostNodeFailure):
    """The update needs a manual migration."""


class MigrationPolicyError(HostNodeFailure):
    """The update would disconnect the clients and the request did not consent to it."""


class DatabaseNotFound(HostNodeFailure):
    """No such database on the node."""


def raise_failure(failure: pb.Failure) -> None:
    """Raise the exception a ``Failure`` stands for (nothing when ``kind`` is NONE)."""
    if failure.kind == pb.ERROR_KIND_NONE:
        return
    cls = {
        pb.ERROR_KIND_MIGRATION_REJECTED: MigrationError,
        pb.ERROR_KIND_MIGRATION_POLICY: MigrationPolicyError,
        pb.ERROR_KIND_NO_SUCH_DATABASE: DatabaseNotFound,
    }.get(failure.kind, HostNodeFailure)
    raise cls(failure.kind, failure.message)


@dataclass(frozen=True)
class Installed:
    """What an install did."""

    created: bool
    #: The update's schema changes, as text (empty for a create).
    migration: str = ""


class GrpcHostNodeClient:
    """Install, delete and reset databases on one host node over gRPC."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = pb_grpc.HostNodeStub(channel)

    async def install(
        self, identity: Identity, owner: Identity, program: bytes, *, clear: bool = False, token: bytes | None = None
    ) -> Installed:
        """Create or update the database; raises :class:`HostNodeFailure` on failure.

        ``token``: the pre-publish token of an update the caller lets disconnect the clients.
        """
        return await self._install(identity, owner, program, clear=clear, keep_program=False, token=token)

    async def reset(self, identity: Identity, owner: Identity, program: bytes | None) -> Installed:
        """Wipe the database and reinstall ``program`` (None: its current program)."""
        return await self._install(identity, owner, program or b"", clear=True, keep_program=program is None)

    async def _install(
        self,
        identity: Identity,
        owner: Identity,
        program: bytes,
        *,
        clear: bool,
        keep_program: bool,
        token: bytes | None = None,
    ) -> Installed:
        request = pb.InstallRequest(
            database_identity=identity.to_bsatn(),
            owner_identity=owner.to_bsatn(),
            program=program,
            clear=clear,
            keep_program=keep_program,
        )
        if token is not None:
            request.migration_token = token
        response: pb.InstallResponse = await self.stub.Install(request)
        raise_failure(response.failure)
        return Installed(response.created, response.migration)

    async def delete(self, identity: Identity) -> None:
        """Stop the database and remove its replica."""
        response: pb.DeleteResponse = await self.stub.Delete(pb.DeleteRequest(database_identity=identity.to_bsatn()))
        raise_failure(response.failure)
