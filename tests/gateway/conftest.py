"""One standalone Orrery subprocess per transport shared by the gateway tests (each test uses its own
names). Every test that takes ``server`` or ``transport`` runs once per transport: the gateway
reaching the control plane and host node in-process, and over gRPC."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.modules_harness import MODULES_DIR
from tests.servers import TRANSPORTS, StandaloneServer

_names = itertools.count()


@pytest.fixture(scope="session", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """``orrery.standalone --transport``: every server-backed test runs over each."""
    return str(request.param)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, transport: str) -> Iterator[StandaloneServer]:
    """A running server (session-wide: starting one costs about a second)."""
    root = tmp_path_factory.mktemp(f"orrery-{transport}")
    with StandaloneServer(root / "data", transport=transport) as srv:
        yield srv


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A database name no other test uses."""
    base = request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")
    return f"{base}-{next(_names)}"


def module(name: str) -> bytes:
    """The committed build of ``modules/<name>/<name>.wasm``."""
    return (MODULES_DIR / name / f"{name}.wasm").read_bytes()


CHAT = module("quickstart-chat")
TRANSFER = module("transfer")
MODULE_TEST = module("module-test")
EXAMPLE_PATH = Path("modules/quickstart-chat/quickstart-chat.wasm")
