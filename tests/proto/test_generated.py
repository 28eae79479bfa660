"""The committed gRPC code matches the .proto files (regenerate with `make proto`).

The code is compared with what the *locked* grpcio-tools (``uv.lock``) generates: each release
writes its own version into the files, so a different grpcio-tools in the environment would
report every file as stale. When the installed version is not the locked one, the tests say so
(the environment is stale, not the code).
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["proto/hostnode.proto", "proto/controlplane.proto"]


def locked_version(package: str) -> str:
    """The version of ``package`` that ``uv.lock`` pins."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions = [p["version"] for p in lock["package"] if p["name"] == package]
    assert len(versions) == 1, f"uv.lock pins {package} {len(versions)} times"
    return str(versions[0])


def _require_locked(package: str) -> str:
    """Fail, naming the stale environment, unless the installed ``package`` is the locked one."""
    locked, installed = locked_version(package), metadata.version(package)
    if installed != locked:
        pytest.fail(
            f"the environment is stale: {package} {installed} is installed but uv.lock pins {locked}; "
            "run `make install` (it installs exactly uv.lock) and test again",
            pytrace=False,
        )
    return locked


def _floor(requirement_prefix: str) -> tuple[int, ...]:
    """The ``>=`` floor pyproject.toml sets for a server dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["optional-dependencies"]["server"]:
        match = re.fullmatch(rf"{re.escape(requirement_prefix)}>=([0-9.]+)(,.*)?", req)
        if match:
            return tuple(int(x) for x in match.group(1).split("."))
    raise AssertionError(f"pyproject.toml sets no floor for {requirement_prefix}")


@pytest.mark.parametrize("proto", PROTOS)
def test_generated_code_is_fresh(tmp_path: Path, proto: str) -> None:
    _require_locked("grpcio-tools")
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


def test_dependency_floors_admit_the_generated_code() -> None:
    """The generated code refuses a grpcio or protobuf older than the one it was generated for,
    so pyproject.toml's floors (for library users) must be at least those versions."""
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        grpc_code = (ROOT / (stem + "_pb2_grpc.py")).read_text()
        grpc_match = re.search(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'$", grpc_code, re.M)
        pb_match = re.search(r"^# Protobuf Python Version: ([0-9.]+)$", (ROOT / (stem + "_pb2.py")).read_text(), re.M)
        assert grpc_match and pb_match, f"no version lines in the code generated from {proto}"
        generated_grpc = tuple(int(x) for x in grpc_match.group(1).split("."))
        generated_pb = tuple(int(x) for x in pb_match.group(1).split("."))
        assert _floor("grpcio") >= generated_grpc, f"raise pyproject's grpcio floor to {grpc_match.group(1)}"
        assert _floor("protobuf") >= generated_pb, f"raise pyproject's protobuf floor to {pb_match.group(1)}"


def test_installed_versions_are_the_locked_ones() -> None:
    """Every locked package present in the environment has its locked version (a stale
    environment would otherwise show up as puzzling failures elsewhere)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    stale = []
    for package in lock["package"]:
        if package["name"] == "orrery":
            continue
        try:
            installed = metadata.version(package["name"])
        except metadata.PackageNotFoundError:
            continue  # locked for another platform, Python or extra
        if installed != package["version"]:
            stale.append(f"{package['name']} {installed} (locked: {package['version']})")
    assert not stale, "the environment is stale, run `make install`: " + ", ".join(stale)


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
