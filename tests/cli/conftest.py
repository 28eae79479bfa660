"""Fixtures for CLI tests: a private config file (never the real home directory) and a runner."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orrery.cli import main
from tests.cli.fake_server import FakeServer, fake_server


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME, XDG_CONFIG_HOME and ORRERY_CONFIG into the test's temporary directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("ORRERY_CONFIG", str(tmp_path / "cli.toml"))
    return home


@dataclass
class Result:
    """What one ``orrery`` invocation did."""

    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The ``Error: …`` line (asserting there is exactly one line on stderr after warnings)."""
        lines = [line for line in self.err.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1, self.err
        return lines[0]


def run_cli(*argv: str, stdin: str = "") -> Result:
    """Run ``orrery argv…`` in-process and capture its streams."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(stdin))
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A canned-response server."""
    with fake_server() as s:
        yield s


def make_token(iss: str = "localhost", sub: str = "alice", **extra: object) -> str:
    """An unsigned-looking JWT with the given claims (the CLI never checks signatures)."""
    claims = {"sub": sub, "iss": iss, "aud": ["spacetimedb"], "iat": 1700000000, "exp": None, **extra}
    payload = base64.b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.{payload}.c2ln"


#: Identity of ``make_token()`` (client-api.md §7.2 test vector for ("localhost", "alice")).
ALICE = "c20035600353a2e93544d898c6ed0eac323e200c0468300f22958f8b472a265d"
