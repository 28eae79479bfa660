"""The host-node end of a gateway's gRPC ``Connect`` stream (:mod:`hostnode.grpc_service`):
the protobuf shape of :class:`~hostnode.realtime_stream.ClientStream`'s events.

A module of its own so that it is compiled with the stream it extends (tools/build_native.py:
an interpreted class cannot extend a compiled one).
"""

from __future__ import annotations

from typing import Any

from hostnode.realtime import ClientParams
from hostnode.realtime_stream import ClientStream
from hostnode.service import HostNode
from proto import hostnode_pb2 as pb
from sats.identity import Identity
from sats.ws_v1 import Compression

__all__ = ["GrpcClientStream"]


class GrpcClientStream(ClientStream[pb.HostEvent]):
    """One ``Connect`` stream: the gateway's connections to one database, in protobuf events."""

    def __init__(self, node: HostNode) -> None:
        super().__init__(node)
        self.identity: Identity | None = None

    def _frame_event(self, ref: int, frame: bytes | str, data: bytes) -> pb.HostEvent:
        return pb.HostEvent(frame=pb.ServerFrame(connection_refs=[ref], frame=data))

    def _add_ref(self, event: pb.HostEvent, ref: int) -> None:
        event.frame.connection_refs.append(ref)

    def _closed_event(self, ref: int, code: int, reason: str) -> pb.HostEvent:
        return pb.HostEvent(closed=pb.ConnectionClosed(connection_ref=ref, code=code, reason=reason))

    async def read(self, request_iterator: Any) -> None:
        try:
            async for msg in request_iterator:
                if self.identity is None and msg.database_identity:
                    self.identity = Identity.from_bsatn(msg.database_identity)
                for ev in msg.events:
                    kind = ev.WhichOneof("event")
                    if kind == "message":
                        m = ev.message
                        self.message(m.connection_ref, m.frame, m.text)
                    elif kind == "connected":
                        self._connected(ev.connected)
                    elif kind == "disconnected":
                        self.disconnected(ev.disconnected.connection_ref)
                self.end_of_batch()
        finally:
            self.end()

    def _connected(self, m: pb.ClientConnected) -> None:
        assert self.identity is not None, "the first GatewayFrames names the database"
        params = ClientParams(
            identity=Identity.from_bsatn(m.identity),
            token=m.token,
            connection_id=int.from_bytes(m.connection_id, "little"),
            json=m.protocol == "v1.json.spacetimedb",
            compression=Compression(m.compression or "Brotli"),
            light=m.light,
            confirmed=m.confirmed,
            jwt_payload=m.jwt_payload or None,
        )
        self.connected(m.connection_ref, self.identity, params)
