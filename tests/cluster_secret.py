"""The cluster secret the test harnesses give the servers and clients they start (proto/auth.py)."""

from __future__ import annotations

from pathlib import Path

from proto.auth import SECRET_FILE_NAME, ClusterSecret

__all__ = ["SECRET", "secret_file"]

#: One secret per test run: every in-process server and client of a harness uses it.
SECRET = ClusterSecret.generate()


def secret_file(directory: Path, secret: ClusterSecret = SECRET) -> Path:
    """``directory/cluster-secret`` holding ``secret`` (created if absent), for ``--cluster-secret-file``."""
    path = directory / SECRET_FILE_NAME
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(secret.hex + "\n")
        path.chmod(0o600)
    return path
