"""Suite-wide settings and fixtures shared by every test package.

Hypothesis runs with the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another: no
per-example deadline and no "too slow" health check, since both judge the machine's speed
(machines of this kind differ 2–4×, and CI may share its cores), not the code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.etcd_harness import EtcdServer

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One real etcd for the whole session (started on first use), shared by tests.

    Share it only with a key prefix of your own (``EtcdMetaStore.open(..., prefix=...)``) and never
    kill it; a test that kills, pauses or restarts etcd starts its own with
    :meth:`EtcdServer.start`. Revisions and lease ids are global to the server.
    """
    with EtcdServer.start(tmp_path_factory.mktemp("etcd-session")) as server:
        yield server
