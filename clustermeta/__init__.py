"""Cluster metadata shared by every component: the MetaStore interface (etcd semantics), its
embedded and etcd implementations, and the formats of the records the processes keep in it
(docs/cluster.md). Gateway, control plane and host nodes all read it; only the control plane
writes database records."""
