"""The ``backend`` fixture: each MetaStore implementation, with fresh data per test.

Tests taking ``backend`` run once per store in :data:`~tests.controlplane.stores.STORE_KINDS`;
``@pytest.mark.stores("etcd")`` restricts a test to the stores named. ``private_etcd`` is an etcd
of the test's own, for tests that kill, pause or restart it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.stores import STORE_KINDS, StoreBackend
from tests.etcd_harness import EtcdServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stores(*kinds): run a `backend` test only on these MetaStores")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = marker.args if marker else STORE_KINDS
        unknown = set(kinds) - set(STORE_KINDS)
        if unknown:
            raise ValueError(f"{metafunc.definition.name}: unknown stores {sorted(unknown)}")
        metafunc.parametrize("backend", kinds, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """The store named by the test's parameter: LMDB under tmp_path, or a prefix in the session etcd."""
    etcd = request.getfixturevalue("etcd_server") if request.param == "etcd" else None
    b = StoreBackend(request.param, tmp_path, etcd)
    yield b
    b.cleanup()


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own (to kill, pause or restart), removed afterwards."""
    with EtcdServer.start(tmp_path) as server:
        yield server
