"""Database names as the public API writes them (client-api.md §6.1): pure parsing, no I/O.

A path segment names a database either by identity (64 hex digits, optional ``0x``) or by a
DNS-like name: lowercase ASCII letters, digits and single inner hyphens, at most
:data:`MAX_NAME_LENGTH` characters. Every component that reads names — the control plane writing
them, a gateway answering from its mirror of the cluster's records — parses them here, with
1.12's wording for what is wrong.

1.12 sets no length on a ``DatabaseName``; a database name is also its top-level domain, and
1.12's ``DomainName`` allows 64 characters per segment, so that is our limit. Without one, a name
too long to be a MetaStore key (LMDB's keys end at 511 bytes) failed every route with a 500.
"""

from __future__ import annotations

import re

from sats.errors import SatsError
from sats.identity import Identity

__all__ = ["InvalidName", "MAX_NAME_LENGTH", "NAME_RE", "parse_name_or_identity", "validate_name"]

NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: The longest database name, in characters (= bytes: names are ASCII); see the module docstring.
MAX_NAME_LENGTH = 64


class InvalidName(ValueError):
    """Neither an identity nor a valid database name; ``str()`` is 1.12's reason."""


def validate_name(name: str) -> str:
    """``name`` if it is a valid database name; raises :class:`InvalidName` with 1.12's wording."""
    if not name:
        raise InvalidName("database names cannot be empty")
    try:
        Identity.from_hex(name)
    except SatsError:
        pass
    else:
        raise InvalidName("database names cannot be identities")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"database names are at most {MAX_NAME_LENGTH} characters long, this one has {len(name)}")
    if not all(c.isascii() and (c.islower() or c.isdigit() or c == "-") for c in name):
        raise InvalidName("invalid characters in database name")
    if not NAME_RE.match(name):
        raise InvalidName("invalid hyphen in database name")
    return name


def parse_name_or_identity(text: str) -> Identity | str:
    """An identity, or a valid database name (raises :class:`InvalidName`)."""
    try:
        return Identity.from_hex(text)
    except SatsError:
        pass
    return validate_name(text)
