"""A real Prometheus server for tests (Debian's ``prometheus``, which ``make system-deps`` installs).

:meth:`PrometheusServer.start` runs ``prometheus`` on a free port of 127.0.0.1 with the given
configuration (written to a file in ``tmp_dir``), its storage in a fresh directory, and its log in
``<tmp_dir>/prometheus.log`` (whose tail goes into every error); it returns once ``/-/ready``
answers. :meth:`query` runs an instant query through the HTTP API and returns the result list;
:meth:`get` any other API path. :meth:`close` (or leaving the ``with`` block) stops it with
SIGTERM. Servers still running when the interpreter exits are killed (``atexit``).

Prometheus 2.x applies target discovery about every 5 s, so the first sample is queryable about
5.5 s after start (PLATFORM.md §8): poll, do not sleep.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.etcd_harness import free_port, owns_listener

__all__ = ["PROMETHEUS_BINARY", "PROMTOOL_BINARY", "PrometheusError", "PrometheusServer"]

PROMETHEUS_BINARY = os.environ.get("PROMETHEUS_BINARY", "prometheus")
PROMTOOL_BINARY = os.environ.get("PROMTOOL_BINARY", "promtool")
_LIVE: weakref.WeakSet[PrometheusServer] = weakref.WeakSet()


class PrometheusError(RuntimeError):
    """Prometheus did not start, or an API call failed (the message includes its log tail)."""


class PrometheusServer:
    """One Prometheus process; see the module docstring."""

    def __init__(self, proc: subprocess.Popen[bytes], address: str, log_path: Path, storage: Path) -> None:
        self.proc = proc
        #: ``127.0.0.1:port`` of its web API.
        self.address = address
        self.log_path = log_path
        self.storage = storage
        _LIVE.add(self)

    @classmethod
    def start(cls, tmp_dir: Path, config: dict[str, Any] | str, timeout: float = 60.0) -> PrometheusServer:
        """Start Prometheus with ``config`` (a dict, written as JSON, or the file's text)."""
        tmp_dir.mkdir(parents=True, exist_ok=True)
        config_path = tmp_dir / "prometheus.yml"
        config_path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
        storage = Path(tempfile.mkdtemp(prefix="prometheus-", dir=tmp_dir))
        address = f"127.0.0.1:{free_port()}"
        log_path = tmp_dir / "prometheus.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    PROMETHEUS_BINARY, f"--config.file={config_path}", f"--storage.tsdb.path={storage}",
                    f"--web.listen-address={address}", "--log.level=warn",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        server = cls(proc, address, log_path, storage)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with code {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{address}/-/ready", timeout=2) as r:
                    # Another test worker's server may listen on the port we picked.
                    if r.status == 200 and owns_listener(proc.pid, address):
                        return server
            except OSError:
                pass
            if time.monotonic() > deadline:
                server.close()
                raise PrometheusError(f"prometheus did not become ready within {timeout:g} s:\n{server.log_tail()}")
            time.sleep(0.05)

    def get(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: the ``data`` of a successful answer."""
        url = f"http://{self.address}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"GET {path} {params}: {e.code} {e.read().decode(errors='replace')}") from None
        if doc.get("status") != "success":
            raise PrometheusError(f"GET {path} {params}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (one entry per series: ``{"metric": {...}, "value": [t, "v"]}``)."""
        data = self.get("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] in ("vector", "matrix") else [data]
        return result

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _LIVE.discard(self)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        if server.proc.poll() is None:
            server.proc.kill()
