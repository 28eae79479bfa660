"""What each ``orrery`` command does: the requests of the 1.12 CLI and what it prints.

``client-api.md`` §8 lists, per ``spacetime`` command, the requests it sends and the fields it
reads; every function here follows that list. The argument parsing lives in :mod:`orrery.cli`;
each command takes the parsed ``argparse.Namespace`` and a :class:`Session` (config file and
output streams), prints to ``session.out``, and raises :class:`CliError` on any failure.

Like 1.12, commands that need credentials and find no saved token log in directly against the
target server (``POST /v1/identity``) and save the token they get.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from orrery.budget_options import budgets_of
from orrery.cli_config import CliConfig, decode_identity
from orrery.cli_errors import CliError
from orrery.cli_http import HttpClient, segment
from orrery.cli_render import (
    LogFormatError,
    callables,
    describe_summary,
    render_log_record,
    schema_typespace,
    signature,
)
from orrery.cli_table import (
    TableFormatError,
    parse_sql_response,
    render_plain_table,
    render_sql_response,
    render_table,
)
from orrery.secret_option import secret_of
from sats.types import STRING

__all__ = ["Session", "COMMANDS", "UNSTABLE_WARNING"]

UNSTABLE_WARNING = "WARNING: This command is UNSTABLE and subject to breaking changes."

_DATABASE_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: Where ``orrery start`` keeps its data unless ``--data-dir`` says otherwise.
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "orrery" / "data"
_HEX64 = re.compile(r"^(0[xX])?[0-9a-fA-F]{64}$")


@dataclass
class Session:
    """The config file and the streams a command runs with."""

    config: CliConfig
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)

    def print(self, text: str = "") -> None:
        """A line on stdout."""
        print(text, file=self.out, flush=True)

    def note(self, text: str = "") -> None:
        """A line on stderr (progress, warnings)."""
        print(text, file=self.err, flush=True)

    def save_config(self) -> None:
        """Persist the config file, saying where (as 1.12 does)."""
        self.note(f"Saving config to {self.config.path}.")
        self.config.save()

    def confirm(self, force: bool, prompt: str) -> bool:
        """Ask ``prompt [y/N]`` on stdin unless ``--yes`` was given."""
        if force:
            self.print("Skipping confirmation due to --yes")
            return True
        print(f"{prompt} [y/N]", end="", file=self.out, flush=True)
        answer = self.stdin.readline().strip().lower()
        return answer in ("y", "yes")


# --------------------------------------------------------------------------- shared steps


def _is_identity(text: str) -> bool:
    return bool(_HEX64.match(text))


def _identity_text(text: str) -> str:
    """A 64-hex identity argument normalised to lowercase without ``0x``."""
    return (text[2:] if text[:2] in ("0x", "0X") else text).lower()


def _validate_database_name(name: str) -> None:
    """The name rules of ``client-api.md`` §6.1 (identities are accepted as they are)."""
    if _is_identity(name):
        return
    if not name:
        raise CliError("database names cannot be empty")
    if not _DATABASE_NAME.match(name):
        if re.fullmatch(r"[a-z0-9-]+", name):
            raise CliError(f"invalid hyphen in database name `{name}`")
        raise CliError(
            f"invalid characters in database name `{name}` (use lowercase letters, digits and single hyphens)"
        )


def _host_url(session: Session, args: argparse.Namespace) -> str:
    return session.config.host_url(getattr(args, "server", None))


def _server_issued_login(session: Session, host_url: str) -> str:
    """``POST /v1/identity`` on ``host_url``; saves and returns the new token."""
    body = HttpClient(host_url).request("POST", "/v1/identity").raise_for_status()
    try:
        token = json.loads(body.body)["token"]
    except (ValueError, KeyError, TypeError):
        raise CliError(f"the server at {host_url} did not answer POST /v1/identity with a token") from None
    if not isinstance(token, str):
        raise CliError(f"the server at {host_url} did not answer POST /v1/identity with a token")
    session.note("We have logged in directly to your target server.")
    session.note("WARNING: This login will NOT work for any other servers.")
    session.config.token = token
    session.save_config()
    return token


def _login_token(session: Session, host_url: str) -> str:
    """The saved token, or a fresh server-issued one (1.12's ``get_login_token_or_log_in``)."""
    if session.config.token:
        return session.config.token
    return _server_issued_login(session, host_url)


def _auth_token(session: Session, args: argparse.Namespace, host_url: str) -> str | None:
    if getattr(args, "anonymous", False):
        return None
    return _login_token(session, host_url)


def _database_identity(host_url: str, database: str) -> str:
    """``database`` as an identity: as given if it is 64 hex digits, else ``GET …/identity``."""
    if _is_identity(database):
        return _identity_text(database)
    resp = HttpClient(host_url).request("GET", f"/v1/database/{segment(database)}/identity")
    if resp.status == 404:
        raise CliError(f"failed to find database `{database}`.")
    text = resp.raise_for_status().text().strip()
    if not _is_identity(text):
        raise CliError(f"identity endpoint did not return an identity: {text[:80]!r}")
    return _identity_text(text)


@dataclass(frozen=True, slots=True)
class _Target:
    """A resolved database argument: the server, the caller's token, the database identity."""

    client: HttpClient
    database: str
    identity: str


def _target(session: Session, args: argparse.Namespace, *, auth: bool = True) -> _Target:
    host_url = _host_url(session, args)
    token = _auth_token(session, args, host_url) if auth else None
    identity = _database_identity(host_url, args.database)
    return _Target(HttpClient(host_url, token), args.database, identity)


def _module_schema(t: _Target) -> dict[str, Any]:
    schema = t.client.request("GET", f"/v1/database/{t.identity}/schema", query={"version": "9"})
    body = schema.json_or_error()
    if not isinstance(body, dict):
        raise CliError(f"the schema of `{t.database}` is not a JSON object")
    return body


# --------------------------------------------------------------------------- start


def cmd_start(session: Session, args: argparse.Namespace) -> int:
    """Run the standalone server in the foreground until interrupted."""
    try:
        from orrery import standalone
    except ImportError as e:
        raise CliError(
            f"the standalone server is not installed here ({e}): it is the `server` extra, "
            "`pip install 'orrery[server]'`"
        ) from None
    try:
        standalone.parse_listen_addr(args.listen_addr)
        if args.metrics_addr:
            standalone.parse_listen_addr(args.metrics_addr, "--metrics-addr")
    except ValueError as e:
        raise CliError(f"invalid address: {e}") from None
    try:
        budgets = budgets_of(args)
    except ValueError as e:
        raise CliError(str(e)) from None
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else DEFAULT_DATA_DIR
    standalone.configure_logging(args.log_level)
    try:
        standalone.run(
            args.listen_addr, data_dir, config=standalone.StandaloneConfig(metrics_addr=args.metrics_addr, budgets=budgets),
            transport=args.transport,
        )  # fmt: skip
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        raise CliError(f"cannot start the server on {args.listen_addr}: {e.strerror or e}") from None
    except standalone.NodeProcessError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_gateway(session: Session, args: argparse.Namespace) -> int:
    """Run a cluster gateway in the foreground until interrupted."""
    # gRPC's C core reads its log level once, at import: only its errors, like everything else.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from orrery import gateway_server, process

    try:
        process.parse_listen_addr(args.listen_addr)
        if args.metrics_addr:
            process.parse_listen_addr(args.metrics_addr, "--metrics-addr")
    except ValueError as e:
        raise CliError(f"invalid address: {e}") from None
    try:
        secret = secret_of(args)
    except ValueError as e:
        raise CliError(str(e), exit_code=2) from None
    config = gateway_server.GatewayServerConfig(
        etcd=args.etcd, keys_dir=Path(args.keys_dir).expanduser(), secret=secret, listen_addr=args.listen_addr,
        etcd_prefix=args.etcd_prefix, metrics_addr=args.metrics_addr,
    )  # fmt: skip
    process.configure_logging(args.log_level)
    try:
        gateway_server.run(config)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - keys, etcd or the port: one line, non-zero exit
        raise CliError(f"the gateway stopped: {e}") from None
    return 0


def cmd_controlplane(session: Session, args: argparse.Namespace) -> int:
    """Run one cluster control plane in the foreground until interrupted."""
    import socket

    try:
        from orrery import controlplane_server
        from orrery.process import configure_logging
    except ImportError as e:
        raise CliError(f"the control plane is not available in this installation ({e})") from None
    args.id = args.id or socket.gethostname()
    try:
        process = controlplane_server.process_of(args)
    except ValueError as e:
        raise CliError(str(e), exit_code=2) from None
    configure_logging(args.log_level)
    return controlplane_server.run(process)  # prints its own one-line error


# --------------------------------------------------------------------------- publish


def cmd_publish(session: Session, args: argparse.Namespace) -> int:
    """``PUT /v1/database/<name>`` (named) or ``POST /v1/database`` with the module bytes.

    A named publish without ``--clear-database`` first asks the server what the update would
    do (:func:`_pre_publish`) and sends its consent along."""
    name: str | None = args.name
    if args.clear_database and name is None:
        raise CliError("--clear-database requires a database name or identity")
    host_url = _host_url(session, args)
    token = _auth_token(session, args, host_url)
    if name is not None:
        _validate_database_name(name)
    if args.bin_path is None:
        raise CliError("orrery cannot build modules: pass the compiled module with --bin-path FILE")
    path = Path(args.bin_path)
    try:
        program = path.read_bytes()
    except OSError as e:
        raise CliError(f"cannot read module file {path}: {e.strerror or e}") from None
    session.print(f"(WASM) Skipping build. Instead we are publishing {path}")

    host = urlsplit(host_url).hostname or "<default>"
    if host not in ("localhost", "127.0.0.1"):
        session.print(f"You are about to publish to a non-local server: {host}")
        if not session.confirm(args.yes, "Are you sure you want to proceed?"):
            session.print("Aborting")
            return 0
    session.print(f"Uploading to {session.config.server_label(args.server)} => {host_url}")

    query: dict[str, str] = {}
    if name is not None:
        method, path_part = "PUT", f"/v1/database/{segment(name)}"
        if args.clear_database:
            session.print(f"This will DESTROY the current {name} module, and ALL corresponding data.")
            if not session.confirm(args.yes, f"Are you sure you want to proceed? [deleting {name}]"):
                raise CliError("Aborted.")
            query["clear"] = "true"
        else:
            query.update(_pre_publish(session, HttpClient(host_url, token), name, program, args))
    else:
        method, path_part = "POST", "/v1/database"
    query["host_type"] = "Wasm"
    if args.num_replicas is not None:
        query["num_replicas"] = str(args.num_replicas)
    session.print("Publishing module...")
    result = HttpClient(host_url, token).request(method, path_part, query=query, body=program).json_or_error()

    if isinstance(result, dict) and isinstance(result.get("Success"), dict):
        ok = result["Success"]
        op = "Created new" if ok.get("op") == "created" else "Updated"
        if ok.get("domain"):
            session.print(f"{op} database with name: {ok['domain']}, identity: {ok.get('database_identity')}")
        else:
            session.print(f"{op} database with identity: {ok.get('database_identity')}")
        return 0
    if isinstance(result, dict) and isinstance(result.get("PermissionDenied"), dict):
        denied = result["PermissionDenied"].get("name")
        if token is None:
            raise CliError(f"You need to be logged in as the owner of {denied} to publish to {denied}")
        suggested = decode_identity(token)[:12]
        raise CliError(
            f"The database {denied} is not registered to the identity you provided. "
            f"We suggest you push to either a domain owned by you, or a new domain like: orrery publish {suggested}"
        )
    raise CliError(f"unexpected answer to publish: {json.dumps(result)[:200]}")


def _pre_publish(
    session: Session, client: HttpClient, name: str, program: bytes, args: argparse.Namespace
) -> dict[str, str]:
    """Show what republishing would do and get the user's consent, as 1.12's ``publish`` does.

    ``POST …/pre_publish`` answers 404 for a database that does not exist yet (nothing to
    check). A manual migration stops here (only ``--clear-database`` can publish it). An
    automatic one prints its plan; when it disconnects the clients the user must agree (or have
    said ``--break-clients``/``--yes``). Returns the query parameters of the publish: the
    plan's token with ``policy=BreakClients``, which the server checks against the update it
    is about to run (so a database that changed in between refuses the publish).
    """
    style = "NoColor" if "NO_COLOR" in os.environ else "AnsiColor"
    session.print("Checking for breaking changes...")
    resp = client.request(
        "POST",
        f"/v1/database/{segment(name)}/pre_publish",
        query={"pretty_print_style": style, "host_type": "Wasm"},
        body=program,
    )
    if resp.status == 404:
        return {}
    if not resp.ok:
        raise CliError(f"Pre-publish check failed with status {resp.status} {resp.reason}: {resp.text().strip()}")
    result = resp.json_or_error()
    manual = result.get("ManualMigrate") if isinstance(result, dict) else None
    auto = result.get("AutoMigrate") if isinstance(result, dict) else None
    if isinstance(manual, dict):
        session.print(str(manual.get("reason", "")))
        session.print("Aborting publish due to required manual migration.")
        raise CliError(
            "Aborting because publishing would require manual migration or deletion of data "
            "and --clear-database was not specified."
        )
    if not isinstance(auto, dict) or not isinstance(auto.get("token"), str):
        raise CliError(f"unexpected answer to pre_publish: {json.dumps(result)[:200]}")
    session.print(str(auto.get("migrate_plan", "")).rstrip("\n"))
    if auto.get("break_clients") is True and not session.confirm(
        args.break_clients or args.yes, "The above changes will BREAK existing clients. Do you want to proceed?"
    ):
        session.print("Aborting")
        raise CliError("Publishing aborted by user")
    return {"token": auto["token"], "policy": "BreakClients"}


# --------------------------------------------------------------------------- call


def _no_such_callable(t: _Target, name: str, schema: dict[str, Any]) -> str:
    message = f"No such reducer OR procedure `{name}` for database `{t.database}` resolving to identity `{t.identity}`."
    names = [n for kind, n, _, lifecycle in callables(schema) if lifecycle is None]
    if names:
        message += " Existing reducers and procedures: " + ", ".join(names[:10])
        if len(names) > 10:
            message += f", … ({len(names) - 10} more)"
    else:
        message += " The database has no reducers."
    return message


def cmd_call(session: Session, args: argparse.Namespace) -> int:
    """``GET …/schema?version=9`` then ``POST …/call/<name>`` with the JSON array of arguments."""
    session.note(UNSTABLE_WARNING + "\n")
    t = _target(session, args)
    schema = _module_schema(t)
    try:
        found = next(((kind, params) for kind, n, params, _ in callables(schema) if n == args.function), None)
        ts = schema_typespace(schema)
    except (TableFormatError, KeyError, TypeError) as e:
        raise CliError(f"the schema of `{t.database}` is malformed: {e}") from None
    if found is None:
        raise CliError(_no_such_callable(t, args.function, schema))
    kind, params = found
    # 1.12 pairs arguments with parameters (extra arguments are dropped) and quotes the ones
    # for String parameters that are not already written as JSON strings.
    words = []
    for arg, param in zip(args.arguments, params.elements, strict=False):
        if param.algebraic_type == STRING and not (
            len(arg) >= 1 and arg.startswith('"') and arg.endswith('"')
        ):
            arg = f'"{arg}"'
        words.append(arg)
    body = f"[{', '.join(words)}]".encode()
    resp = t.client.request(
        "POST",
        f"/v1/database/{t.identity}/call/{segment(args.function)}",
        body=body,
        content_type="application/json",
    )
    if not resp.ok:
        text = resp.text()
        if text.startswith(("no such reducer", "no such procedure", "No such procedure")):
            raise CliError(_no_such_callable(t, args.function, schema))
        if text.startswith("invalid arguments"):
            raise CliError(
                f"Invalid arguments provided for {kind} `{args.function}` for database `{t.database}` "
                f"resolving to identity `{t.identity}`: {text.strip()} "
                f"(the {kind} has the signature {signature(args.function, params, ts)})"
            )
        raise CliError(resp.error_message())
    if kind == "procedure":
        session.print(resp.text())
    return 0


# --------------------------------------------------------------------------- sql


def cmd_sql(session: Session, args: argparse.Namespace) -> int:
    """``POST …/sql`` with the query; prints the result as ``spacetime sql`` does (A.8)."""
    session.note(UNSTABLE_WARNING + "\n")
    t = _target(session, args)
    query = {"confirmed": "true"} if args.confirmed else None
    resp = t.client.request("POST", f"/v1/database/{t.identity}/sql", query=query, body=args.query.encode())
    resp.require_json()
    try:
        session.print(render_sql_response(parse_sql_response(resp.body)))
    except TableFormatError as e:
        raise CliError(str(e)) from None
    return 0


# --------------------------------------------------------------------------- subscribe


def cmd_subscribe(session: Session, args: argparse.Namespace) -> int:
    """``GET …/schema?version=9``, then the WebSocket ``…/subscribe`` (JSON protocol): prints
    the transaction updates of the queries as JSON lines (see :mod:`orrery.cli_subscribe`)."""
    # Imported here: aiohttp and the client SDK are only needed by this command.
    import asyncio

    from orrery.cli_subscribe import run_subscribe, subscribe_url
    from orrery_client.schema import ModuleSchema, SchemaError

    session.note(UNSTABLE_WARNING + "\n")
    if args.num_updates is not None and args.num_updates < 0:
        raise CliError("--num-updates must not be negative")
    if args.timeout is not None and args.timeout < 0:
        raise CliError("--timeout must not be negative")
    t = _target(session, args)
    try:
        schema = ModuleSchema.from_json(_module_schema(t))
    except SchemaError as e:
        raise CliError(f"the schema of `{t.database}` is malformed: {e}") from None
    url = subscribe_url(t.client.base_url, t.identity, args.confirmed)
    try:
        asyncio.run(
            run_subscribe(
                url, t.client.token, args.query, schema, num_updates=args.num_updates, timeout=args.timeout,
                print_initial=args.print_initial_update, out=session.out, err=session.err,
            )
        )  # fmt: skip
    except KeyboardInterrupt:
        return 130
    return 0


# --------------------------------------------------------------------------- logs


def cmd_logs(session: Session, args: argparse.Namespace) -> int:
    """``GET …/logs?num_lines=&follow=``; renders each ndjson record (or passes JSON through)."""
    t = _target(session, args)
    num_lines = args.num_lines
    if args.follow and num_lines is None:
        num_lines = 10  # when following, start from the recent past, not the beginning
    query = {"follow": "true" if args.follow else "false"}
    if num_lines is not None:
        query = {"num_lines": str(num_lines), **query}
    try:
        for line in t.client.stream_lines("GET", f"/v1/database/{t.identity}/logs", query=query):
            if args.format == "json":
                session.out.write(line.decode("utf-8", errors="replace") + "\n")
                session.out.flush()
                continue
            if not line.strip():
                continue
            try:
                session.print(render_log_record(json.loads(line)))
            except (ValueError, LogFormatError) as e:
                raise CliError(f"malformed log line from the server: {e}") from None
    except KeyboardInterrupt:
        return 130
    return 0


# --------------------------------------------------------------------------- describe


def cmd_describe(session: Session, args: argparse.Namespace) -> int:
    """``GET …/schema?version=9``: the schema JSON (``--json``) or a readable summary."""
    session.note(UNSTABLE_WARNING + "\n")
    t = _target(session, args)
    schema = _module_schema(t)
    if args.entity_type:
        key = "reducers" if args.entity_type == "reducer" else "tables"
        entity = next((e for e in schema.get(key) or [] if e.get("name") == args.entity_name), None)
        if entity is None:
            raise CliError(f"no such {args.entity_type}: `{args.entity_name}`")
        doc: Any = entity
    else:
        doc = schema
    if args.json:
        session.print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if args.entity_type:
        raise CliError("describing a single table or reducer needs --json")
    try:
        session.print(describe_summary(schema, t.database, t.identity))
    except (TableFormatError, KeyError, TypeError, IndexError) as e:
        raise CliError(f"the schema of `{t.database}` is malformed: {e}") from None
    return 0


# --------------------------------------------------------------------------- delete, rename, list


def cmd_delete(session: Session, args: argparse.Namespace) -> int:
    """``DELETE /v1/database/<identity>`` (owner only)."""
    t = _target(session, args)
    resp = t.client.request("DELETE", f"/v1/database/{t.identity}")
    if resp.status == 428:
        raise CliError("the server asks to confirm deleting child databases, which orrery does not support")
    resp.raise_for_status()
    return 0


_SET_NAMES_ERRORS: dict[str, Callable[[Any, str], str]] = {
    "PermissionDenied": lambda v, db: f"Permission denied for domain: {(v or {}).get('domain')}",
    "PermissionDeniedOnAny": lambda v, db: f"Permission denied for domains: {(v or {}).get('domains')}",
    "DatabaseNotFound": lambda v, db: f"Database {db} not found",
    "NotYourDatabase": lambda v, db: f"You cannot rename {db} because it is owned by another identity.",
    "OtherError": lambda v, db: str(v),
}


def cmd_rename(session: Session, args: argparse.Namespace) -> int:
    """``PUT /v1/database/<db>/names`` with ``["<new name>"]``."""
    host_url = _host_url(session, args)
    token = _login_token(session, host_url)
    if not args.to:
        raise CliError("the new name cannot be empty")
    resp = HttpClient(host_url, token).request(
        "PUT",
        f"/v1/database/{segment(args.database)}/names",
        body=json.dumps([args.to]).encode(),
        content_type="application/json",
    )
    result = resp.json_or_error()
    if not resp.ok:
        if isinstance(result, str):
            variant, value = result, None
        elif isinstance(result, dict) and len(result) == 1:
            ((variant, value),) = result.items()
        else:
            raise CliError(resp.error_message())
        explain = _SET_NAMES_ERRORS.get(variant)
        raise CliError(explain(value, args.database) if explain else resp.error_message())
    session.print(f"Name set to {args.to} for identity {args.database}.")
    return 0


def cmd_list(session: Session, args: argparse.Namespace) -> int:
    """``GET /v1/identity/<own identity>/databases``."""
    session.note(UNSTABLE_WARNING + "\n")
    host_url = _host_url(session, args)
    token = _login_token(session, host_url)
    identity = decode_identity(token)
    result = HttpClient(host_url, token).request("GET", f"/v1/identity/{identity}/databases").json_or_error()
    identities = result.get("identities") if isinstance(result, dict) else None
    if not isinstance(identities, list):
        raise CliError("unable to retrieve databases for identity: the answer has no `identities` list")
    if identities:
        session.print(f"Associated database identities for {identity}:\n")
        session.print(render_table(["db_identity"], [[str(i)] for i in identities]))
    else:
        session.print(f"No databases found for {identity}.")
    return 0


# --------------------------------------------------------------------------- login, logout


def cmd_login(session: Session, args: argparse.Namespace) -> int:
    """Save a token: the one given with ``--token``, or a new server-issued one."""
    if args.token:
        decode_identity(args.token)  # refuse something that is not a token at all
        session.config.token = args.token
        session.save_config()
        return 0
    if session.config.token:
        session.print("You are already logged in.")
        session.print("If you want to log out, use orrery logout.")
        return 0
    server = args.server_issued_login or args.server
    _server_issued_login(session, session.config.host_url(server))
    return 0


def cmd_login_show(session: Session, args: argparse.Namespace) -> int:
    """The identity of the saved token (and the token itself with ``--token``)."""
    token = session.config.token
    if not token:
        session.print("You are not logged in. Run `orrery login` to log in.")
        return 0
    session.print(f"You are logged in as {decode_identity(token)}")
    if args.show_token:
        session.print(f"Your auth token (don't share this!) is {token}")
    return 0


def cmd_logout(session: Session, args: argparse.Namespace) -> int:
    """Forget the saved token."""
    session.config.token = None
    session.save_config()
    return 0


# --------------------------------------------------------------------------- server


def cmd_server_add(session: Session, args: argparse.Namespace) -> int:
    """Save a server (fetching its public key as a fingerprint unless ``--no-fingerprint``)."""
    url = args.url or args.url_option
    if not url:
        raise CliError("server add needs a URL: orrery server add NAME URL")
    if args.url and args.url_option and args.url != args.url_option:
        raise CliError("give the server URL once (either positionally or with --url)")
    url = url.rstrip("/")
    fingerprint = None
    if not args.no_fingerprint:
        resp = HttpClient(url, timeout=10).request("GET", "/v1/identity/public-key")
        if not resp.ok:
            raise CliError(
                f"Unable to retrieve fingerprint for server: {url} ({resp.error_message()}); "
                f"add it without one with: orrery server add {args.name} {url} --no-fingerprint"
            )
        fingerprint = resp.text()
        session.print(f"For server {url}, got fingerprint:\n{fingerprint}")
    new = session.config.add_server(url, args.name, fingerprint)
    if args.default:
        session.config.set_default(args.name)
    session.print(f"Host: {new.host}")
    session.print(f"Protocol: {new.protocol}")
    session.save_config()
    return 0


def cmd_server_list(session: Session, args: argparse.Namespace) -> int:
    """The saved servers, the default marked ``***``."""
    rows = [
        ["***" if session.config.is_default(s) else "", s.host, s.protocol, s.nickname or ""]
        for s in session.config.servers
    ]
    session.print(render_plain_table(["DEFAULT", "HOSTNAME", "PROTOCOL", "NICKNAME"], rows, right_first=True))
    return 0


def cmd_server_set_default(session: Session, args: argparse.Namespace) -> int:
    """Make a saved server the default."""
    session.config.set_default(args.server_name)
    session.save_config()
    return 0


COMMANDS: dict[str, Callable[[Session, argparse.Namespace], int]] = {
    "start": cmd_start,
    "gateway": cmd_gateway,
    "controlplane": cmd_controlplane,
    "publish": cmd_publish,
    "call": cmd_call,
    "sql": cmd_sql,
    "subscribe": cmd_subscribe,
    "logs": cmd_logs,
    "describe": cmd_describe,
    "delete": cmd_delete,
    "rename": cmd_rename,
    "list": cmd_list,
    "login": cmd_login,
    "login show": cmd_login_show,
    "logout": cmd_logout,
    "server add": cmd_server_add,
    "server list": cmd_server_list,
    "server set-default": cmd_server_set_default,
}
