"""``key=value`` text for log messages, so the control plane's lines stay machine-readable inside
the process's logfmt records (``msg="election db=… old_epoch=3 new_epoch=4 …"``)."""

from __future__ import annotations

import json

__all__ = ["kv"]


def kv(**fields: object) -> str:
    """``k=v`` pairs in the given order; values with spaces, quotes or ``=`` are JSON-quoted, None is ``-``."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


def _value(v: object) -> str:
    if v is None:
        return "-"
    text = v if isinstance(v, str) else str(v)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text
