"""Metrics and health endpoints shared by every Orrery process (issue 10).

=================  ==========================================================================
module             what it holds
=================  ==========================================================================
``instruments``    :class:`~observability.instruments.Histogram`: plain-Python buckets the hot
                   paths update (no lock, no label lookup), and the bucket sets 1.12 uses
``families``       :class:`~observability.families.MetricSpec` (name, type, help, labels) and
                   :class:`~observability.families.Scrape`, which turns plain values into
                   ``prometheus_client`` metric families at scrape time
``exposition``     the Prometheus text format of a registry (pure: families in, bytes out)
``registry``       one ``CollectorRegistry`` per process, with the process's CPU and memory
``http``           ``/metrics`` (``/v1/metrics``), ``/healthz`` and ``/readyz`` as aiohttp routes
=================  ==========================================================================

The engine never calls ``prometheus_client`` on a hot path: it counts into plain ints and
:class:`~observability.instruments.Histogram` objects owned by the thing being measured (a
database, a commit log, an etcd client), and each component's collector
(``hostnode.metrics``, ``gateway.metrics``, ``controlplane.metrics``, ``clustermeta.metrics``)
reads them when Prometheus scrapes.
"""
