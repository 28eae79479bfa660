"""Open the cluster's MetaStore from the command line's ``--etcd ENDPOINTS [--etcd-prefix P]``.

:func:`open_metastore` is the one place a process turns endpoints into a store, so pointing every
process at the etcd implementation is a change here only.

* ``http://host:2379,http://host2:2379`` (or bare ``host:port`` lists): etcd, every key under
  ``prefix`` — :mod:`clustermeta.metastore_etcd`, once it is part of the build.
* ``lmdb:PATH``: the embedded store in the file ``PATH`` (one process only: the file is locked),
  for trying a control plane out without etcd; the prefix is ignored (the file is the cluster).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from clustermeta.metastore import MetaStore, MetaStoreUnavailable
from clustermeta.metastore_lmdb import LmdbMetaStore

__all__ = ["DEFAULT_PREFIX", "open_metastore", "parse_endpoints"]

#: Where every key of a cluster lives in etcd unless ``--etcd-prefix`` says otherwise.
DEFAULT_PREFIX = "/orrery"


def parse_endpoints(text: str) -> list[str]:
    """``a:2379,b:2379`` → ``["a:2379", "b:2379"]``; raises ValueError when empty."""
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise ValueError("--etcd needs at least one endpoint (host:port, comma-separated)")
    return endpoints


async def open_metastore(endpoints: str, prefix: str = DEFAULT_PREFIX) -> MetaStore:
    """The cluster's MetaStore at ``endpoints`` (see the module docstring)."""
    if endpoints.startswith("lmdb:"):
        path = Path(endpoints.removeprefix("lmdb:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return await LmdbMetaStore.open(path)
    hosts = parse_endpoints(endpoints)
    try:
        etcd = importlib.import_module("clustermeta.metastore_etcd")
    except ImportError:
        raise MetaStoreUnavailable(
            "this build has no etcd MetaStore yet (clustermeta.metastore_etcd); use --etcd lmdb:PATH to run "
            "one control plane on an embedded store"
        ) from None
    store: MetaStore = await etcd.EtcdMetaStore.open(hosts, prefix=prefix)
    return store
