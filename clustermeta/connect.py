"""Opening a cluster's metadata store: the one place a process turns ``--etcd`` into a MetaStore.

Every cluster process (gateway, control plane, host node) takes ``--etcd ENDPOINTS`` and
``--etcd-prefix PREFIX`` and calls :func:`open_metastore`. ``ENDPOINTS`` is etcd's client
addresses, ``host:port[,host:port…]``. For development and tests a process may instead run on the
embedded store, ``lmdb:PATH`` — a single LMDB file only one process can open, so that is a
one-process "cluster".
"""

from __future__ import annotations

import asyncio
import logging
import time

from clustermeta.metastore import MetaStore, MetaStoreUnavailable
from clustermeta.metastore_lmdb import LmdbMetaStore

__all__ = ["DEFAULT_PREFIX", "LMDB_SCHEME", "STARTUP_WAIT_S", "open_metastore", "parse_endpoints"]

log = logging.getLogger(__name__)

#: How long a server process waits at startup for etcd to answer before it gives up: etcd may be
#: starting beside it (a pod, ``orrery cluster up``) or slow to answer on a busy machine.
STARTUP_WAIT_S = 60.0

#: The default ``--etcd-prefix``: every key of the cluster lives under it.
DEFAULT_PREFIX = "/orrery"
#: ``--etcd lmdb:PATH``: the embedded store at PATH instead of etcd.
LMDB_SCHEME = "lmdb:"


def parse_endpoints(text: str) -> list[str]:
    """``a:2379,b:2379`` → ``["a:2379", "b:2379"]`` (``lmdb:PATH`` stays one entry); raises
    ValueError when empty."""
    if text.startswith(LMDB_SCHEME):
        return [text]
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise ValueError("--etcd needs at least one endpoint (host:port, comma-separated)")
    return endpoints


async def open_metastore(endpoints: str, prefix: str = DEFAULT_PREFIX, *, wait: float = 0.0) -> MetaStore:
    """The cluster's MetaStore: etcd at ``endpoints`` under ``prefix``, or ``lmdb:PATH``.

    Raises :class:`~clustermeta.metastore.MetaStoreError` (for etcd, ``MetaStoreUnavailable``
    when it does not answer) and ``ValueError`` for malformed endpoints. With ``wait`` (seconds),
    an etcd that does not answer is tried again, with a warning, until that much time has passed.
    """
    deadline = time.monotonic() + wait
    delay = 0.25
    warned = False
    while True:
        try:
            return await _open(endpoints, prefix)
        except MetaStoreUnavailable as e:
            if time.monotonic() + delay > deadline:
                raise
            if not warned:
                log.warning("waiting for etcd (up to %.0f s): %s", wait, e)
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _open(endpoints: str, prefix: str) -> MetaStore:
    if endpoints.startswith(LMDB_SCHEME):
        path = endpoints[len(LMDB_SCHEME) :]
        if not path:
            raise ValueError("--etcd lmdb:PATH needs a path")
        return await LmdbMetaStore.open(path)
    if not endpoints.strip():
        raise ValueError("--etcd needs at least one host:port")
    # Imported here: the etcd client (and its generated protos) is needed only with etcd.
    from clustermeta.metastore_etcd import EtcdMetaStore

    store: MetaStore = await EtcdMetaStore.open(endpoints, prefix=prefix)
    return store
