"""How tests/k8s checks the probes of the manifests — the one place that knows the health endpoints
are not there yet.

The manifests probe ``/healthz`` and ``/readyz`` on ``--metrics-addr`` of every control plane and
host node and on the gateway's HTTP port, and pass ``--metrics-addr`` to every Orrery process:
what the metrics work (issue 10, items 1–2, branch ``metrics``) adds. Until it is merged,
``HEALTH_ENDPOINTS`` is False and:

* a probe of ``/healthz`` or ``/readyz`` is checked by a stand-in: on the container's port named
  ``http`` (the gateway), ``GET /v1/ping`` must answer 200; on any other port (the metrics port of
  a control plane or host node), the container's port named ``grpc`` must accept connections;
* ``--metrics-addr`` is dropped from the command line of a process whose ``--help`` does not
  list it (only the host node accepts it today; it serves nothing on it yet).

TODO(metrics merge): set ``HEALTH_ENDPOINTS = True``. Then every probe is performed exactly as
the kubelet would (``/readyz`` must answer 200: a host node caught up, a gateway that sees etcd
and a control plane) and every command line runs as written.
"""

from __future__ import annotations

import functools
import subprocess
import sys

__all__ = ["HEALTH_ENDPOINTS", "ORRERY_HEALTH_PATHS", "accepts_option", "stand_in"]

#: Whether the Orrery processes serve /healthz and /readyz (see the module docstring).
HEALTH_ENDPOINTS = False
#: The paths the stand-in replaces while HEALTH_ENDPOINTS is False.
ORRERY_HEALTH_PATHS = ("/healthz", "/readyz")


def stand_in(path: str, port_name: str) -> tuple[str, str] | None:
    """What to check instead of an HTTP probe of ``path`` on the port named ``port_name``:
    ``("http", "/v1/ping")`` on the same port, ``("tcp", "grpc")`` for the port named grpc, or
    None to perform the probe as written."""
    if HEALTH_ENDPOINTS or path.split("?")[0] not in ORRERY_HEALTH_PATHS:
        return None
    if port_name == "http":
        return ("http", "/v1/ping")
    return ("tcp", "grpc")


@functools.cache
def accepts_option(role: str, option: str) -> bool:
    """Whether ``orrery ROLE`` takes ``option`` (always True once HEALTH_ENDPOINTS is)."""
    if HEALTH_ENDPOINTS:
        return True
    done = subprocess.run(
        [sys.executable, "-m", "orrery", role, "--help"], capture_output=True, text=True, timeout=120
    )  # fmt: skip
    return option in done.stdout
