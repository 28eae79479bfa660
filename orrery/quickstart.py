"""``make run``: standalone Orrery with the quickstart-chat module published, and what to try next.

Starts the server in this process, publishes ``modules/quickstart-chat/quickstart-chat.wasm`` as
``quickstart-chat`` over HTTP to itself (an update when it already exists), owned by an identity
whose token is kept in ``<data-dir>/quickstart.token`` so the owner-only commands (logs, delete,
DML) work, then prints curl and CLI lines and serves until Ctrl-C / SIGTERM. Restarting keeps
every database, name and identity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from orrery.standalone import DEFAULT_LISTEN_ADDR, configure_logging, parse_listen_addr, serve

__all__ = ["main", "publish_quickstart", "instructions"]

DATABASE = "quickstart-chat"
MODULE = Path(__file__).resolve().parent.parent / "modules" / DATABASE / f"{DATABASE}.wasm"
TOKEN_FILE = "quickstart.token"


class QuickstartError(Exception):
    """Publishing the quickstart module failed."""


async def _owner_token(session: aiohttp.ClientSession, base: str, token_path: Path) -> str:
    """The saved owner token, or a new identity's (saved, mode 0600)."""
    if token_path.exists():
        return token_path.read_text().strip()
    async with session.post(f"{base}/v1/identity") as resp:
        if resp.status != 200:
            raise QuickstartError(f"POST /v1/identity answered {resp.status}: {await resp.text()}")
        token = str((await resp.json(content_type=None))["token"])
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


async def publish_quickstart(address: str, data_dir: Path, module: Path = MODULE) -> tuple[str, str]:
    """Publish the module to the server at ``address``; returns (op, database identity)."""
    base = f"http://{address}"
    async with aiohttp.ClientSession() as session:
        token = await _owner_token(session, base, data_dir / TOKEN_FILE)
        async with session.put(
            f"{base}/v1/database/{DATABASE}",
            params={"host_type": "Wasm"},
            data=module.read_bytes(),
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise QuickstartError(f"publishing {DATABASE} answered {resp.status}: {body}")
    success = json.loads(body)["Success"]
    return str(success["op"]), str(success["database_identity"])


def instructions(address: str, data_dir: Path) -> str:
    """The "what to try next" text."""
    url = f"http://{address}"
    token = f'"$(cat {shlex.quote(str(data_dir / TOKEN_FILE))})"'
    auth = f"-H \"Authorization: Bearer $(cat {shlex.quote(str(data_dir / TOKEN_FILE))})\""
    db = f"{url}/v1/database/{DATABASE}"
    server = "" if address == DEFAULT_LISTEN_ADDR else f" -s {url}"
    return "\n".join(
        [
            "",
            "Try it with curl:",
            f"  curl -X POST {db}/call/set_name {auth} -H 'Content-Type: application/json' -d '[\"Alice\"]'",
            f"  curl -X POST {db}/call/send_message {auth} -H 'Content-Type: application/json' -d '[\"Hello, Orrery!\"]'",
            f"  curl -X POST {db}/sql -d 'SELECT * FROM message'",
            f"  curl '{db}/logs?num_lines=20' {auth}",
            "",
            "Or with the CLI (log in once with the owner's token):",
            f"  .venv/bin/orrery login --token {token}",
            f"  .venv/bin/orrery call{server} {DATABASE} set_name Alice",
            f"  .venv/bin/orrery call{server} {DATABASE} send_message 'Hello, Orrery!'",
            f"  .venv/bin/orrery sql{server} {DATABASE} 'SELECT * FROM message'",
            f"  .venv/bin/orrery logs{server} {DATABASE}",
            f"  .venv/bin/orrery describe{server} {DATABASE}",
            "",
            "Press Ctrl-C to stop; `make run` again picks up where you left off.",
        ]
    )


async def run_quickstart(listen_addr: str, data_dir: Path) -> int:
    """Serve, publish, print; returns the exit code once stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    ready: asyncio.Future[str] = loop.create_future()
    server = asyncio.create_task(serve(listen_addr, data_dir, ready=ready.set_result, stop=stop))
    waiting: set[asyncio.Future[Any]] = {server, ready}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if server in done:
        server.result()  # raises the startup error
        return 1
    address = ready.result()
    try:
        op, identity = await publish_quickstart(address, data_dir)
    except (QuickstartError, OSError, aiohttp.ClientError) as e:
        print(f"error: {e}", file=sys.stderr)
        stop.set()
        await server
        return 1
    print(f"Orrery is listening on http://{address} (data in {data_dir})")
    print(f"Published {DATABASE} ({op}), database identity {identity}.")
    print(f"Its owner's token is in {data_dir / TOKEN_FILE}.")
    print(instructions(address, data_dir), flush=True)
    await server
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m orrery.quickstart``."""
    parser = argparse.ArgumentParser(prog="python -m orrery.quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--listen-addr", default=DEFAULT_LISTEN_ADDR, help="host:port (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="data directory (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        parse_listen_addr(args.listen_addr)
    except ValueError as e:
        parser.error(str(e))
    configure_logging("info")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(run_quickstart(args.listen_addr, args.data_dir))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
