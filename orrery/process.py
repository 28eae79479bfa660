"""What every server process (standalone, control plane) shares: logfmt logging on stderr, quiet
by default (our INFO lines, everyone else's warnings), and stopping on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time

__all__ = ["LogfmtFormatter", "configure_logging", "stop_on_signals"]

#: The loggers of our own packages (their INFO lines are the ones an operator reads).
OUR_LOGGERS = ("orrery", "gateway", "controlplane", "clustermeta")


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg="…"`` lines (one record per line, machine-parseable)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} msg={json.dumps(record.getMessage())}"
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info))}"
        return line


def configure_logging(level: str = "info") -> None:
    """Quiet, structured logs on stderr: our lines from ``level`` up, everyone else's warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set (where the loop can handle signals: the main thread)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    return stop
