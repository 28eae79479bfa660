"""The CLI's config file: saved servers, the default server and the login token.

A TOML file (default ``~/.config/orrery/cli.toml``; ``$ORRERY_CONFIG`` or ``--config`` override
it) with the keys 1.12's ``cli.toml`` uses::

    default_server = "local"
    spacetimedb_token = "eyJ…"

    [[server_configs]]
    nickname = "local"
    host = "127.0.0.1:3000"
    protocol = "http"

A missing file means "only the local server, not logged in". Saving is atomic (write + rename)
and the file is private to the user (mode 0600), since it holds a bearer token.

:func:`decode_identity` reads the identity out of a saved token the way the 1.12 CLI does
(``client-api.md`` §7.6): the payload is decoded with the *standard* base64 alphabet, no
signature check, and ``sub``/``iss``/``iat`` must be present.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orrery.cli_errors import CliError
from sats.errors import DecodeError
from sats.identity import Identity

__all__ = [
    "CONFIG_ENV",
    "ServerConfig",
    "CliConfig",
    "default_config_path",
    "decode_identity",
    "split_url",
]

CONFIG_ENV = "ORRERY_CONFIG"
VALID_PROTOCOLS = ("http", "https")


def default_config_path(flag: str | None = None, environ: dict[str, str] | None = None) -> Path:
    """``--config`` if given, else ``$ORRERY_CONFIG``, else ``~/.config/orrery/cli.toml``."""
    env = os.environ if environ is None else environ
    if flag:
        return Path(flag).expanduser()
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orrery" / "cli.toml"


def split_url(url: str) -> tuple[str, str]:
    """``"http://h:3000/"`` → ``("h:3000", "http")``; an error for a missing or unknown scheme."""
    if "://" not in url:
        raise CliError(f"Invalid url: {url} (expected http://HOST:PORT or https://HOST)")
    protocol, _, host = url.partition("://")
    host = host.rstrip("/")
    if protocol not in VALID_PROTOCOLS:
        raise CliError(f"Invalid protocol: {protocol}")
    if not host:
        raise CliError(f"Invalid url: {url}")
    return host, protocol


@dataclass(slots=True)
class ServerConfig:
    """One saved server: its nickname, ``host[:port]``, protocol and public-key fingerprint."""

    host: str
    protocol: str = "http"
    nickname: str | None = None
    ecdsa_public_key: str | None = None

    @property
    def url(self) -> str:
        """``protocol://host``."""
        return f"{self.protocol}://{self.host}"

    def is_called(self, name: str) -> bool:
        """True if ``name`` is this server's nickname, host or URL."""
        if name in (self.nickname, self.host):
            return True
        return "://" in name and name.partition("://")[2].rstrip("/") == self.host


def _local() -> ServerConfig:
    return ServerConfig(host="127.0.0.1:3000", protocol="http", nickname="local")


@dataclass(slots=True)
class CliConfig:
    """The parsed config file; mutate it, then :meth:`save`."""

    path: Path
    servers: list[ServerConfig] = field(default_factory=lambda: [_local()])
    default_server: str | None = "local"
    token: str | None = None

    # ------------------------------------------------------------------ file

    @classmethod
    def load(cls, path: Path) -> CliConfig:
        """Read ``path``; a missing file gives the defaults."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as e:
            raise CliError(f"cannot read config file {path}: {e.strerror or e}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise CliError(f"config file {path} is invalid: {e}") from None
        return cls._from_dict(path, data)

    @classmethod
    def _from_dict(cls, path: Path, data: dict[str, Any]) -> CliConfig:
        def opt_str(d: dict[str, Any], key: str) -> str | None:
            v = d.get(key)
            if v is not None and not isinstance(v, str):
                raise CliError(f"config file {path} is invalid: `{key}` must be a string")
            return v

        servers = []
        raw_servers = data.get("server_configs", [])
        if not isinstance(raw_servers, list):
            raise CliError(f"config file {path} is invalid: `server_configs` must be an array of tables")
        for s in raw_servers:
            if not isinstance(s, dict) or not isinstance(s.get("host"), str):
                raise CliError(f"config file {path} is invalid: every server needs a `host`")
            servers.append(
                ServerConfig(
                    host=s["host"],
                    protocol=opt_str(s, "protocol") or "http",
                    nickname=opt_str(s, "nickname"),
                    ecdsa_public_key=opt_str(s, "ecdsa_public_key"),
                )
            )
        return cls(
            path=path,
            servers=servers,
            default_server=opt_str(data, "default_server"),
            token=opt_str(data, "spacetimedb_token"),
        )

    def to_toml(self) -> str:
        """The file's text."""

        def line(key: str, value: str | None) -> str:
            # A JSON string literal is a valid TOML basic string for any text.
            return "" if value is None else f"{key} = {json.dumps(value, ensure_ascii=False)}\n"

        out = line("default_server", self.default_server) + line("spacetimedb_token", self.token)
        for s in self.servers:
            out += "\n[[server_configs]]\n"
            out += line("nickname", s.nickname) + line("host", s.host) + line("protocol", s.protocol)
            out += line("ecdsa_public_key", s.ecdsa_public_key)
        return out

    def save(self) -> None:
        """Write the file atomically, readable only by its owner."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cli.toml.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self.to_toml())
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise CliError(f"cannot save config file {self.path}: {e.strerror or e}") from None

    # ------------------------------------------------------------------ servers

    def find_server(self, name: str) -> ServerConfig:
        """The saved server called ``name`` (nickname, host or URL)."""
        for s in self.servers:
            if s.is_called(name):
                return s
        raise CliError(
            f"No such saved server configuration: {name}. Add it with: orrery server add {name} <url>"
        )

    def host_url(self, server: str | None) -> str:
        """The base URL for ``-s SERVER`` (a nickname, a host or a full URL) or the default server."""
        if server:
            if "://" in server:
                host, protocol = split_url(server)
                return f"{protocol}://{host}"
            return self.find_server(server).url
        if self.default_server is None:
            raise CliError(
                "No default server configuration. Set one with: orrery server set-default <server>"
            )
        for s in self.servers:
            if s.is_called(self.default_server):
                return s.url
        raise CliError(
            f"Default server does not refer to a saved server configuration: {self.default_server}"
        )

    def server_label(self, server: str | None) -> str:
        """How ``publish`` names the target server: the ``-s`` value or the default's name."""
        return server or self.default_server or "<default>"

    def add_server(self, url: str, nickname: str | None, fingerprint: str | None) -> ServerConfig:
        """Save a new server; refuses a nickname or host that is already taken."""
        host, protocol = split_url(url)
        if nickname is not None:
            for s in self.servers:
                if s.is_called(nickname):
                    raise CliError(f"Server nickname {nickname} already in use: {s.url}")
        for s in self.servers:
            if s.host == host:
                raise CliError(f"Server already configured for host: {host}")
        new = ServerConfig(host=host, protocol=protocol, nickname=nickname, ecdsa_public_key=fingerprint)
        self.servers.append(new)
        return new

    def set_default(self, name: str) -> None:
        """Make the saved server ``name`` the default."""
        for s in self.servers:
            if s.is_called(name):
                self.default_server = s.nickname or s.host
                return
        raise CliError(f"Cannot set default server to unknown server {name}")

    def is_default(self, s: ServerConfig) -> bool:
        """True if ``s`` is the default server."""
        return self.default_server is not None and s.is_called(self.default_server)


def decode_identity(token: str) -> str:
    """The identity (64 hex digits) a token stands for, read without verifying it (§7.6)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise CliError(
            "the saved token does not look like a JSON web token; run `orrery logout` then `orrery login`"
        )
    segment = parts[1]
    try:
        raw = base64.b64decode(segment + "=" * (-len(segment) % 4), validate=True)
        claims = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        raise CliError(
            "the saved token's payload cannot be decoded (standard base64 JSON expected)"
        ) from None
    if not isinstance(claims, dict):
        raise CliError("the saved token's payload is not a JSON object")
    for name in ("sub", "iss", "iat"):
        if name not in claims:
            raise CliError(f"the saved token has no `{name}` claim")
    iss, sub = claims["iss"], claims["sub"]
    if not isinstance(iss, str) or not isinstance(sub, str) or not iss or not sub:
        raise CliError("the saved token's `iss` and `sub` must be non-empty strings")
    identity = Identity.from_claims(iss, sub)
    if "hex_identity" in claims:
        try:
            claimed = Identity.from_hex(claims["hex_identity"])
        except (DecodeError, TypeError):
            raise CliError("the saved token's `hex_identity` is not an identity") from None
        if claimed != identity:
            raise CliError("the saved token's `hex_identity` does not match its issuer and subject")
    return identity.to_hex()
