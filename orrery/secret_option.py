"""``--cluster-secret-file``: the option every cluster process (gateway, control plane, host node)
and every ``orrery cluster`` operation takes; the secret itself is proto/auth.py's."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # gRPC comes with the server extra; loaded on use
    from proto.auth import ClusterSecret

__all__ = ["add_secret_option", "secret_of"]


def add_secret_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--cluster-secret-file PATH``."""
    parser.add_argument(
        "--cluster-secret-file", metavar="PATH", default=None,
        help="file holding the cluster secret every internal call carries: 64 hex digits, "
        "e.g. `openssl rand -hex 32` (default: $ORRERY_CLUSTER_SECRET_FILE; required)",
    )  # fmt: skip


def secret_of(args: argparse.Namespace, data_dir: Path | None = None) -> ClusterSecret:
    """The secret the command line names; else ``DATA_DIR/cluster-secret`` (what ``orrery cluster
    up`` writes) when ``data_dir`` is given and that file exists. ValueError says what is wrong."""
    from proto.auth import SECRET_FILE_ENV, SECRET_FILE_NAME, SecretError, secret_from

    path = getattr(args, "cluster_secret_file", None)
    local = Path(data_dir) / SECRET_FILE_NAME if data_dir is not None else None
    if not path and not os.environ.get(SECRET_FILE_ENV) and local is not None and local.exists():
        path = str(local)
    try:
        return secret_from(path)
    except SecretError as e:
        raise ValueError(str(e)) from None
