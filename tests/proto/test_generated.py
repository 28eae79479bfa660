"""The committed gRPC code matches the .proto files (regenerate with `make proto`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["proto/hostnode.proto", "proto/controlplane.proto"]


@pytest.mark.parametrize("proto", PROTOS)
def test_generated_code_is_fresh(tmp_path: Path, proto: str) -> None:
    args = [
        "grpc_tools.protoc", f"-I{ROOT}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
        f"--grpc_python_out={tmp_path}", str(ROOT / proto),
    ]
    assert protoc.main(args) == 0, "protoc failed"
    stem = proto.removesuffix(".proto")
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
        fresh = (tmp_path / (stem + suffix)).read_bytes()
        committed = (ROOT / (stem + suffix)).read_bytes()
        assert fresh == committed, f"{stem + suffix} is stale: run `make proto` and commit the result"


def test_batch_messages_round_trip() -> None:
    sys.path.insert(0, str(ROOT))
    from proto import hostnode_pb2 as hn

    batch = hn.CallBatch(
        database_identity=b"\x01" * 32,
        calls=[hn.ReducerCall(request_id=i, reducer="transfer", bsatn=b"\x00" * 16, caller_identity=b"\x02" * 32)
               for i in range(100)],
    )
    back = hn.CallBatch.FromString(batch.SerializeToString())
    assert len(back.calls) == 100 and back.calls[7].request_id == 7 and back.calls[7].WhichOneof("args") == "bsatn"
    frames = hn.HostFrames(events=[hn.HostEvent(frame=hn.ServerFrame(connection_refs=[1, 2, 3], frame=b"x"))])
    assert list(hn.HostFrames.FromString(frames.SerializeToString()).events[0].frame.connection_refs) == [1, 2, 3]


def test_gateway_enums_mirror_the_proto_enums() -> None:
    """gateway.failures numbers kinds and statuses as the .proto files do (they cross the wire as ints)."""
    from gateway.failures import ControlErrorKind, HostErrorKind, ReducerStatus
    from proto import controlplane_pb2 as cp
    from proto import hostnode_pb2 as hn

    for mirror, proto_enum, prefix in (
        (HostErrorKind, hn.ErrorKind, "ERROR_KIND_"),
        (ControlErrorKind, cp.ErrorKind, "ERROR_KIND_"),
        (ReducerStatus, hn.Status, "STATUS_"),
    ):
        assert {m.name: m.value for m in mirror} == {  # type: ignore[attr-defined]
            name.removeprefix(prefix): value for name, value in proto_enum.items()
        }
