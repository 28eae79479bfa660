"""A stand-in host node for kill tests, run as ``python -m tests.gateway.hanging_node``.

Serves the HostNode gRPC service on a free port of 127.0.0.1 and prints ``listening <address>``;
every ``CallReducers`` prints ``CallReducers`` and then never answers, so the test can kill this
process (SIGKILL) while a call is in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from proto import GRPC_OPTIONS
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc


class Hanging(pb_grpc.HostNodeServicer):
    """Answers nothing."""

    async def CallReducers(self, request: pb.CallBatch, context: Any) -> pb.CallBatchResult:  # noqa: N802
        print("CallReducers", flush=True)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def main() -> None:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    pb_grpc.add_HostNodeServicer_to_server(Hanging(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
