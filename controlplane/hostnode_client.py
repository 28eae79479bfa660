"""A :class:`controlplane.core.HostNodeClient` over the host node's gRPC service.

The control plane drives remote host nodes through this (install, delete, reset). A
``Failure`` answer becomes an exception whose text is the node's message, so the control plane
words its errors exactly as it does over an in-process :class:`hostnode.service.HostNode`; the
exception classes keep the names :class:`ControlPlane` recognises (``MigrationError``,
``MigrationPolicyError``, ``ModuleLoadError``, ``DatabaseNotFound``).

In cluster mode an install also names the epoch the leader writes in, the replicas and learners
(as :class:`Peer`) and the record's generation (``InstallRequest`` fields 7–10); standalone leaves
them at 0 / empty.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "ModuleLoadError",
    "Peer",
    "raise_failure",
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


class ModuleLoadError(HostNodeFailure):
    """The program is not a module the node can run (the node's reason says why)."""


class DatabaseNotFound(HostNodeFailure):
    """No such database on the node."""


def raise_failure(failure: pb.Failure) -> None:
    """Raise the exception a ``Failure`` stands for (nothing when ``kind`` is NONE)."""
    if failure.kind == pb.ERROR_KIND_NONE:
        return
    cls = {
        pb.ERROR_KIND_MIGRATION_REJECTED: MigrationError,
        pb.ERROR_KIND_MIGRATION_POLICY: MigrationPolicyError,
        pb.ERROR_KIND_INVALID_PROGRAM: ModuleLoadError,
        pb.ERROR_KIND_NO_SUCH_DATABASE: DatabaseNotFound,
    }.get(failure.kind, HostNodeFailure)
    raise cls(failure.kind, failure.message)


@dataclass(frozen=True)
class Peer:
    """A replica's node: its id and the address of its HostNode/Replication services."""

    node_id: str
    address: str

    def to_proto(self) -> pb.Peer:
        """The ``Peer`` message."""
        return pb.Peer(node_id=self.node_id, address=self.address)


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
        self,
        identity: Identity,
        owner: Identity,
        program: bytes,
        *,
        clear: bool = False,
        token: bytes | None = None,
        keep_program: bool = False,
        epoch: int = 0,
        replicas: Sequence[Peer] = (),
        learners: Sequence[Peer] = (),
        generation: int = 0,
        timeout: float | None = None,
    ) -> Installed:
        """Create or update the database; raises :class:`HostNodeFailure` on failure.

        ``token``: the pre-publish token of an update the caller lets disconnect the clients.
        ``keep_program``: reinstall the current program (``program`` is ignored). Cluster mode:
        ``epoch`` the leader (this node) writes in, ``replicas`` (the leader first) and
        ``learners`` of the database, its ``generation``. ``timeout``: the call's deadline.
        """
        request = pb.InstallRequest(
            database_identity=identity.to_bsatn(),
            owner_identity=owner.to_bsatn(),
            program=program,
            clear=clear,
            keep_program=keep_program,
            epoch=epoch,
            replicas=[p.to_proto() for p in replicas],
            learners=[p.to_proto() for p in learners],
            generation=generation,
        )
        if token is not None:
            request.migration_token = token
        response: pb.InstallResponse = await self.stub.Install(request, timeout=timeout)
        raise_failure(response.failure)
        return Installed(response.created, response.migration)

    async def reset(self, identity: Identity, owner: Identity, program: bytes | None) -> Installed:
        """Wipe the database and reinstall ``program`` (None: its current program)."""
        return await self.install(identity, owner, program or b"", clear=True, keep_program=program is None)

    async def delete(self, identity: Identity, *, timeout: float | None = None) -> None:
        """Stop the database and remove its replica."""
        response: pb.DeleteResponse = await self.stub.Delete(
            pb.DeleteRequest(database_identity=identity.to_bsatn()), timeout=timeout
        )
        raise_failure(response.failure)
