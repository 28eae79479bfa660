"""Control plane: databases, names, owners; in a cluster also placement, leader elections,
membership operations and active/standby failover (docs/cluster.md).

=========================  ========================================================================
module                     what it holds
=========================  ========================================================================
``core``                   names, owners, lookups (:class:`~controlplane.core.Catalog`), standalone
                           publish/delete (:class:`~controlplane.core.ControlPlane`), the errors
``grpc_service``           the ControlPlane gRPC service over :class:`ControlPlaneOps`
``hostnode_client``        ``HostNode.Install/Delete`` over gRPC (standalone and cluster)
``config``                 :class:`~controlplane.config.ClusterConfig`, every cluster setting
``cluster``                :class:`~controlplane.cluster.Cluster`: wires the parts below, runs the
                           reconcile loop while active; ``start()``/``stop()``/``ops()``
``placement``              pure: replica counts, least-loaded nodes, leaders spread
``nodes``                  :class:`~controlplane.nodes.NodeDirectory`, the live host nodes
``watching``               the records view, and the ``WatchDatabases`` stream
``dbrecords``              reads and fenced compare-and-swap writes of database records
``ha``                     :class:`~controlplane.ha.ActiveSeat`: active/standby, the write fence
``elections``              :class:`~controlplane.elections.Elector`: epochs, promises, the choice
``publishing``             :class:`~controlplane.publishing.ClusterControlPlane`: create (record
                           first), update, reset, delete
``operations``             add/move replica, transfer leader, drain
``inspection``             cluster status and verify
``replica_client``         the host nodes' ``Replication`` service (and Install/Delete), deadlines
``logfields``              ``key=value`` log text
=========================  ========================================================================
"""
