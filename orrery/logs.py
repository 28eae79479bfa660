"""Process logging: logfmt lines on stderr, quiet by default (our INFO lines, everyone else's
warnings). Every server process (standalone, control plane) configures it the same way."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["LogfmtFormatter", "configure_logging"]

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
