"""Suite-wide settings and fixtures shared by every test package.

Hypothesis runs with the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another: no
per-example deadline and no "too slow" health check, since both judge the machine's speed
(machines of this kind differ 2–4×, and CI may share its cores), not the code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.etcd_harness import EtcdServer

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a compiled engine older than its sources (``make native``): Python would
    import the stale ``.so`` in place of the edited ``.py``, and every test would pass or fail on
    yesterday's code. ``make pytest`` rebuilds first; a bare ``pytest`` after an edit stops here."""
    from tools.build_native import MANIFEST, compiled_files, source_digests

    if not compiled_files():
        return
    built = json.loads(MANIFEST.read_text()).get("sources", {}) if MANIFEST.exists() else {}
    stale = [m for m, digest in source_digests().items() if built.get(m) != digest]
    if stale:
        pytest.exit(
            f"the compiled engine is older than {', '.join(stale)}: run `make native` (or "
            "`make NATIVE=0 native` to test plain Python)", returncode=4,
        )  # fmt: skip


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One real etcd for the whole session (started on first use), shared by tests.

    Share it only with a key prefix of your own (``EtcdMetaStore.open(..., prefix=...)``) and never
    kill it; a test that kills, pauses or restarts etcd starts its own with
    :meth:`EtcdServer.start`. Revisions and lease ids are global to the server.
    """
    with EtcdServer.start(tmp_path_factory.mktemp("etcd-session")) as server:
        yield server
