"""Real servers for integration tests: standalone Orrery as a subprocess, plus a small HTTP client.

:class:`StandaloneServer` runs ``python -m orrery.standalone`` on a free port of 127.0.0.1 (the
OS picks it: ``--listen-addr 127.0.0.1:0``; the server prints the address it bound) with a data
directory of the test's choosing, waits until it is ready, and stops it with SIGTERM. Stopping
and starting again over the same directory is a restart. ``transport="grpc"`` runs it with ``--transport grpc`` (gateway → control plane
and host node over gRPC inside the process). Server logs go to ``<log_dir>/*.log``
and are included in the error when the server does not come up.

:class:`Client` wraps an aiohttp session: every call returns a :class:`Reply` holding status,
headers and the whole body, so tests assert on exactly what went over the wire.

Typical use::

    with StandaloneServer(tmp_path / "data") as server:
        async def body(c: Client) -> None:
            reply = await c.post("/v1/identity")
            assert reply.status == 200
        server.run(body)
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import aiohttp
from multidict import CIMultiDictProxy

__all__ = ["REPO_ROOT", "TRANSPORTS", "Client", "Reply", "ServerError", "StandaloneServer"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The transports of ``orrery.standalone --transport``.
TRANSPORTS = ("inprocess", "grpc", "split")
_READY = re.compile(r"listening on http://(\S+)")
T = TypeVar("T")


class ServerError(RuntimeError):
    """The server did not start or stop as expected."""


class StandaloneServer:
    """A ``python -m orrery.standalone`` subprocess over ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        args: Sequence[str] = (),
        log_dir: Path | None = None,
        start_timeout: float = 60.0,
        module: str = "orrery.standalone",
        transport: str = "inprocess",
        wrapper: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        #: ``--transport`` of ``orrery.standalone``: how its gateway reaches the control plane and
        #: host node ("inprocess" or "grpc"); the suite runs against both.
        self.transport = transport
        #: The entry point run as ``python -m <module>`` (``orrery.quickstart`` takes the same flags).
        self.module = module
        self.args = list(args)
        #: A command the server runs under (``valgrind …``, for loadtest/callgrind_calls.py).
        self.wrapper = list(wrapper)
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir.parent
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.starts = 0
        #: Every line the current process printed on stdout so far.
        self.output: list[str] = []
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if not self.address:
            raise ServerError("the server is not running")
        return f"http://{self.address}"

    def start(self) -> StandaloneServer:
        """Start the server and wait until it accepts requests."""
        if self.proc is not None:
            raise ServerError("already running")
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = self.log_dir / f"orrery-{os.getpid()}-{id(self):x}-{self.starts}.log"
        log = self._log_path.open("w")
        cmd = [
            *self.wrapper, sys.executable, "-m", self.module,
            "--listen-addr", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            *(["--transport", self.transport] if self.module == "orrery.standalone" else []),
            *self.args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, env=env
        )
        log.close()
        lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        output = self.output = []

        def pump() -> None:
            for line in stdout:
                output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name="orrery-stdout").start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail("did not become ready in time")
            if line is None:
                self._fail("exited before becoming ready")
            match = _READY.search(line)
            if match:
                self.address = match.group(1)
                return self

    def _fail(self, what: str) -> NoReturn:
        self.kill()
        raise ServerError(f"{self.module} {what}; its log:\n{self.log_text()}")

    def wait_for_output(self, text: str, timeout: float = 10.0) -> str:
        """Wait until the process printed ``text`` on stdout; returns everything printed so far."""
        deadline = time.monotonic() + timeout
        while True:
            printed = "".join(self.output)
            if text in printed:
                return printed
            if time.monotonic() > deadline:
                raise ServerError(f"{self.module} did not print {text!r}; it printed:\n{printed}")
            time.sleep(0.02)

    def log_text(self) -> str:
        """What the server wrote to stderr (its structured log)."""
        return self._log_path.read_text() if self._log_path and self._log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for a clean exit; returns the exit code."""
        proc, self.proc, self.address = self.proc, None, ""
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ServerError(f"orrery standalone ignored SIGTERM for {timeout}s") from None

    def kill(self) -> None:
        """SIGKILL (no clean shutdown)."""
        proc, self.proc, self.address = self.proc, None, ""
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> StandaloneServer:
        """Stop cleanly and start again over the same data directory (the port may change)."""
        self.stop()
        return self.start()

    def run(self, body: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``body(client)`` in a fresh event loop with a client for this server."""

        async def main() -> T:
            async with Client(self.url) as client:
                return await body(client)

        return asyncio.run(main())

    def __enter__(self) -> StandaloneServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.stop()
        else:
            self.kill()


@dataclass
class Reply:
    """One HTTP response, fully read."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def content_type(self) -> str | None:
        """The raw ``Content-Type`` header, exactly as sent."""
        return self.headers.get("Content-Type")

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.content_type!r}, {self.body[:300]!r})"


class Client:
    """Requests against one server; ``token`` adds ``Authorization: Bearer``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self.session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        data: bytes | str | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request and read the whole response."""
        assert self.session is not None, "use `async with Client(...)`"
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        if isinstance(data, str):
            data = data.encode()
        # No Content-Type unless the test sets one (aiohttp would add application/octet-stream).
        skip = () if "Content-Type" in hdrs else ("Content-Type",)
        async with self.session.request(
            method, self.base_url + path, data=data, headers=hdrs, params=params, allow_redirects=False,
            skip_auto_headers=skip,
        ) as resp:
            body = await resp.read()
            return Reply(resp.status, resp.headers, body)

    async def get(self, path: str, **kw: Any) -> Reply:
        """GET."""
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        """POST."""
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> Reply:
        """PUT."""
        return await self.request("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        """DELETE."""
        return await self.request("DELETE", path, **kw)

    # --- the common flows ---------------------------------------------------------------------

    async def new_identity(self) -> tuple[str, str]:
        """``POST /v1/identity`` → (identity hex, token)."""
        reply = await self.post("/v1/identity")
        assert reply.status == 200, reply
        doc = reply.json()
        return doc["identity"], doc["token"]

    async def publish(
        self, name: str | None, program: bytes, *, token: str | None = None, clear: bool = False, method: str = "PUT"
    ) -> Reply:
        """Publish ``program`` (to ``name`` if given) the way the 1.12 CLI does."""
        params = {"host_type": "Wasm"}
        if clear:
            params["clear"] = "true"
        path = "/v1/database" if name is None else f"/v1/database/{name}"
        return await self.request("POST" if name is None else method, path, token=token, data=program, params=params)

    async def call(self, db: str, reducer: str, *args: Any, token: str | None = None) -> Reply:
        """``POST …/call/<reducer>`` with positional JSON args."""
        return await self.post(f"/v1/database/{db}/call/{reducer}", token=token, json_body=list(args))

    async def sql(self, db: str, query: str, *, token: str | None = None) -> Reply:
        """``POST …/sql``."""
        return await self.post(f"/v1/database/{db}/sql", token=token, data=query)

    async def rows(self, db: str, query: str, *, token: str | None = None) -> list[Any]:
        """The rows of a successful SELECT."""
        reply = await self.sql(db, query, token=token)
        assert reply.status == 200, reply
        return list(reply.json()[0]["rows"])
