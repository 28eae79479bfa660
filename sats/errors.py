"""The exceptions raised by the ``sats`` package.

Every codec in this package reports bad input through this hierarchy only: a caller that
catches :class:`DecodeError` never has to also guard against ``IndexError``,
``struct.error`` or ``UnicodeDecodeError`` leaking out of a decoder.
"""

from __future__ import annotations


class SatsError(Exception):
    """Base class of every error raised by the ``sats`` package."""


class DecodeError(SatsError):
    """Malformed BSATN or SATS-JSON input (too short, bad tag, bad UTF-8, wrong JSON shape, …)."""


class EncodeError(SatsError):
    """A Python value that does not fit the SATS type it is being encoded as.

    ``path`` locates the offending part of the value (``"c.some"``, ``"[3]"``); it is
    built up as the error propagates out of nested products, sums and arrays.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message, path)
        self.message = message
        self.path = path

    def under(self, step: str) -> EncodeError:
        """The same error, located one level further out (``step`` is a field name or ``[i]``)."""
        if not self.path:
            path = step
        elif self.path.startswith("["):
            path = step + self.path
        else:
            path = f"{step}.{self.path}"
        return EncodeError(self.message, path)

    def __str__(self) -> str:
        return f"at {self.path}: {self.message}" if self.path else self.message
