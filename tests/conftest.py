"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.etcd_harness import EtcdServer


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One real etcd for the whole session (started on first use), shared by tests.

    Share it only with a key prefix of your own (``EtcdMetaStore.open(..., prefix=...)``) and never
    kill it; a test that kills, pauses or restarts etcd starts its own with
    :meth:`EtcdServer.start`. Revisions and lease ids are global to the server.
    """
    with EtcdServer.start(tmp_path_factory.mktemp("etcd-session")) as server:
        yield server
