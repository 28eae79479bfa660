"""Host node: database replicas — module host, LMDB datastore, commit log."""
