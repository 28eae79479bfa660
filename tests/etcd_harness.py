"""A real etcd server for tests: one single-member etcd process on free ports of 127.0.0.1.

Start one with :meth:`EtcdServer.start` and hand :attr:`EtcdServer.endpoints` to a client
(``EtcdMetaStore.open(server.endpoints)``). The data directory lives on ``/dev/shm`` (tmpfs: etcd
3.4 has no ``--unsafe-no-fsync``, and fsync on tmpfs is free) or, where that is not writable, in
the system temp directory; the log goes to ``<tmp_dir>/etcd-<name>.log`` and its tail is put in
the error when etcd does not come up. Timings are the fast test timings of PLATFORM.md §1
(``--heartbeat-interval 10 --election-timeout 100``: healthy in about 0.1 s, minimum lease TTL 1 s).

Faults, all keeping the data directory and the ports, so clients reconnect by themselves:

* :meth:`kill` (SIGKILL) and :meth:`stop` (SIGTERM), then :meth:`restart`;
* :meth:`pause` / :meth:`resume` (SIGSTOP / SIGCONT): etcd hangs without closing connections;
* ``restart(client_port=p)`` serves the same data on another client port, unseen by existing
  clients (they keep failing to reach :attr:`endpoints` until ``restart()`` moves it back) — for
  changing the data while a client is cut off.

:meth:`close` (or leaving the ``with`` block) stops etcd and deletes its data directory. Servers
still running when the interpreter exits are killed (``atexit``), so an interrupted test run
leaves no etcd behind. The API is synchronous and blocks for the ~0.1 s etcd takes to start;
from a coroutine, call it directly (a short stall of the loop is harmless in a test).

Typical use::

    with EtcdServer.start(tmp_path) as etcd:
        store = await EtcdMetaStore.open(etcd.endpoints, prefix=b"/test/")
        ...
        etcd.kill()
        etcd.restart()
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO

from orrery.cluster_local import free_port as cluster_free_port
from orrery.cluster_local import owns_listener

__all__ = ["ETCD_BINARY", "EtcdError", "EtcdServer", "free_port", "owns_listener"]

#: The etcd executable (``make system-deps`` installs Debian's ``etcd-server``).
ETCD_BINARY = os.environ.get("ETCD_BINARY", "etcd")
_SHM = Path("/dev/shm")
_LIVE: weakref.WeakSet[EtcdServer] = weakref.WeakSet()


class EtcdError(RuntimeError):
    """etcd did not start or stop as expected (the message includes its log tail)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (outside the source-port range)."""
    return cluster_free_port()


def _data_root() -> Path | None:
    return _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None


class EtcdServer:
    """One etcd process (single member) with its data directory; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        client_port: int,
        peer_port: int,
        name: str = "n1",
        start_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.client_port = client_port
        self.peer_port = peer_port
        self.name = name
        self.start_timeout = start_timeout
        #: The port etcd serves clients on right now (differs from :attr:`client_port` only after
        #: ``restart(client_port=...)``).
        self.serving_port = client_port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- construction

    @classmethod
    def start(cls, tmp_dir: Path | str, *, name: str = "n1", start_timeout: float = 30.0) -> EtcdServer:
        """Start a fresh etcd on free ports; its log goes to ``tmp_dir``. Returns once healthy."""
        tmp = Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        root = _data_root()
        data_dir = Path(tempfile.mkdtemp(prefix=f"orrery-etcd-{name}-", dir=root if root else tmp))
        last: EtcdError | None = None
        for _ in range(3):  # a port picked by free_port() can be taken before etcd binds it
            server = cls(
                data_dir,
                tmp / f"etcd-{name}.log",
                client_port=free_port(),
                peer_port=free_port(),
                name=name,
                start_timeout=start_timeout,
            )
            try:
                server._launch(server.client_port)
                return server
            except EtcdError as e:
                last = e
                shutil.rmtree(data_dir / "member", ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        assert last is not None
        raise last

    # -- addresses

    @property
    def endpoints(self) -> str:
        """``"127.0.0.1:<client port>"``, the form :class:`EtcdMetaStore` takes."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        """Whether the etcd process is alive (a paused one counts as running)."""
        return self.proc is not None and self.proc.poll() is None

    # -- faults

    def kill(self) -> None:
        """SIGKILL etcd and wait for it to die (data directory kept)."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM etcd and wait (SIGKILL after ``timeout``); the data directory is kept."""
        if not self.running:
            return
        assert self.proc is not None
        self._resume_quietly()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def restart(self, *, client_port: int | None = None) -> None:
        """Start etcd again over the same data directory (stopping it first if it runs).

        ``client_port``: serve clients on that port instead of :attr:`client_port` for this run.
        """
        self.stop()
        self._launch(self.client_port if client_port is None else client_port)

    def pause(self) -> None:
        """SIGSTOP etcd: connections stay open but nothing answers (calls hit their deadlines).
        Returns once every thread of it is stopped (``/proc``), not only signalled."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)
            deadline = time.monotonic() + 10
            while not _stopped(self.proc.pid):
                if time.monotonic() > deadline:
                    raise EtcdError(f"etcd {self.name} (pid {self.proc.pid}) did not stop on SIGSTOP within 10 s")
                time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT a paused etcd."""
        self._resume_quietly()

    def close(self) -> None:
        """Stop etcd and delete its data directory (the log stays)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- plumbing

    def _launch(self, port: int) -> None:
        if self.running:
            raise EtcdError(f"etcd {self.name} is already running (pid {self.proc.pid if self.proc else '?'})")
        client_url = f"http://127.0.0.1:{port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        member_exists = (self.data_dir / "member").is_dir()
        args = [
            ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{self.name}={peer_url}",
            "--initial-cluster-state", "existing" if member_exists else "new",
            "--heartbeat-interval", "10",
            "--election-timeout", "100",
            "--log-level", "error",
            "--logger", "zap",
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except FileNotFoundError:
            log.close()
            raise EtcdError(
                f"{ETCD_BINARY!r} not found: install it with `make system-deps` (apt-get install etcd-server)"
            ) from None
        self._log = log
        self.serving_port = port
        _LIVE.add(self)
        try:
            self._wait_healthy(port)
        except BaseException:
            self._signal_and_wait(signal.SIGKILL)
            raise

    def _wait_healthy(self, port: int) -> None:
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise EtcdError(f"etcd {self.name} exited with {self.proc.returncode}\n{self._log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url, timeout=1.0) as reply:
                    # Another etcd (another test worker's) may listen on the port we picked: its
                    # answer counts only once the port's listening socket is this process's own.
                    if json.loads(reply.read()).get("health") == "true" and owns_listener(self.proc.pid, f"127.0.0.1:{port}"):
                        return
            if time.monotonic() > deadline:
                raise EtcdError(
                    f"etcd {self.name} not healthy on {url} after {self.start_timeout} s\n{self._log_tail()}"
                )
            time.sleep(0.01)

    def _signal_and_wait(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)
            self._resume_quietly()
            self.proc.wait()
        self._reap()

    def _resume_quietly(self) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE.discard(self)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _stopped(pid: int) -> bool:
    """Whether every thread of process ``pid`` is stopped (state T), or it is gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.kill()
