"""Opening a cluster's metadata store: the one place a process turns ``--etcd`` into a MetaStore.

Every cluster process (gateway, control plane, host node) takes ``--etcd ENDPOINTS`` and
``--etcd-prefix PREFIX`` and calls :func:`open_metastore`. ``ENDPOINTS`` is etcd's client
addresses, ``host:port[,host:port…]``. For development and tests a process may instead run on the
embedded store, ``lmdb:PATH`` — a single LMDB file only one process can open, so that is a
one-process "cluster".
"""

from __future__ import annotations

from clustermeta.metastore import MetaStore
from clustermeta.metastore_lmdb import LmdbMetaStore

__all__ = ["DEFAULT_PREFIX", "LMDB_SCHEME", "open_metastore", "parse_endpoints"]

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


async def open_metastore(endpoints: str, prefix: str = DEFAULT_PREFIX) -> MetaStore:
    """The cluster's MetaStore: etcd at ``endpoints`` under ``prefix``, or ``lmdb:PATH``.

    Raises :class:`~clustermeta.metastore.MetaStoreError` (for etcd, ``MetaStoreUnavailable``
    when it does not answer) and ``ValueError`` for malformed endpoints.
    """
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
