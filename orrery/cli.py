"""``orrery`` — the command line tool, mirroring ``spacetime`` 1.12 for the same jobs.

Commands (``client-api.md`` §8 lists what each one sends):

    orrery start [--listen-addr 127.0.0.1:3000] [--data-dir DIR] [--metrics-addr HOST:PORT]
    orrery gateway --etcd ENDPOINTS --keys-dir DIR [--listen-addr ADDR] [--etcd-prefix /orrery] [--metrics-addr HOST:PORT]
    orrery controlplane --etcd ENDPOINTS [--listen-addr HOST:PORT] [--etcd-prefix /orrery] [--id ID] [--lease-ttl 2]
                        [--metrics-addr HOST:PORT]
    orrery publish [-c|--clear-database] [--break-clients] [-y] [-s SERVER] [--bin-path FILE] [NAME]
    orrery call DATABASE FUNCTION [ARGS...]
    orrery sql DATABASE QUERY
    orrery subscribe DATABASE QUERY... [-n N] [-t SECONDS] [--print-initial-update] [--confirmed]
    orrery logs DATABASE [-f] [-n N] [--format text|json]
    orrery describe DATABASE [--json] [reducer|table NAME]
    orrery delete DATABASE
    orrery rename --to NEW_NAME DATABASE
    orrery list
    orrery login [--server-issued-login SERVER] [--token TOKEN] | login show [--token]
    orrery logout
    orrery server add NAME URL [--default] [--no-fingerprint] | server list | server set-default NAME
    orrery hostnode --node-id ID --data-dir DIR --listen-addr HOST:PORT --etcd ENDPOINTS [--metrics-addr HOST:PORT]
    orrery cluster up|prometheus-config|status|verify|add-replica|move-replica|transfer-leader|drain ...
        (orrery/cli_cluster.py)

``gateway``, ``controlplane`` and ``hostnode`` also take ``--cluster-secret-file PATH`` (else
``$ORRERY_CLUSTER_SECRET_FILE``) and refuse to start without it (proto/auth.py).

Global: ``--config FILE`` (else ``$ORRERY_CONFIG``, else ``~/.config/orrery/cli.toml``). Every
error is one line ``Error: <message>`` on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from orrery.budget_options import add_budget_options
from orrery.cli_cluster import CLUSTER_COMMANDS, add_cluster_parsers
from orrery.cli_commands import COMMANDS, UNSTABLE_WARNING, Session
from orrery.cli_config import CliConfig, default_config_path
from orrery.cli_errors import CliError
from orrery.hostnode_process import add_arguments as hostnode_arguments
from orrery.hostnode_process import run_from_args as run_hostnode
from orrery.secret_option import add_secret_option

#: ``orrery start --transport`` (orrery.standalone.TRANSPORTS; spelled here, as the CLI ships
#: without the server).
STANDALONE_TRANSPORTS = ("inprocess", "grpc", "split")
#: ... and its default (orrery.standalone.DEFAULT_TRANSPORT).
DEFAULT_STANDALONE_TRANSPORT = "split"

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and raised (so ``main`` decides the exit)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)", exit_code=2)


class _CommandParser(_Parser):
    """A command's parser: options and positionals may be mixed in any order, as clap allows
    (``orrery describe chat --json table user``, ``orrery call chat f -s local a b``)."""

    _mixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._mixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def _server(p: argparse.ArgumentParser, what: str = "the server") -> None:
    p.add_argument("-s", "--server", help=f"nickname, host or URL of {what} (default: the default server)")


def _yes(p: argparse.ArgumentParser) -> None:
    p.add_argument("-y", "--yes", action="store_true", help="answer yes to confirmation prompts")


def _anonymous(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--anonymous", action="store_true", help="act with a fresh anonymous identity, not the saved token"
    )


def _controlplane_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen-addr", default="127.0.0.1:5100", help="host:port of its gRPC service (default 127.0.0.1:5100)")
    p.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated host:port (or lmdb:PATH)")
    p.add_argument("--etcd-prefix", default="/orrery", help="key prefix of the cluster (default /orrery)")
    p.add_argument("--id", default="", help="this control plane's id (default: the host name)")
    p.add_argument("--lease-ttl", type=float, default=2.0, help="lease TTL in seconds (default 2)")
    p.add_argument("--advertise-addr", default="", help="host:port other processes reach it at")
    p.add_argument("--metrics-addr", default="", help="host:port to serve /metrics, /healthz and /readyz on")
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level (default info)"
    )
    add_secret_option(p)


def _database(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("database", help=f"name or identity of the database {what}")


def build_parser() -> argparse.ArgumentParser:
    """The full ``orrery`` argument parser."""
    # --config is accepted before or after the command; SUPPRESS keeps a later default from
    # overwriting an earlier value.
    common = _CommandParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="config file (default: $ORRERY_CONFIG or ~/.config/orrery/cli.toml)",
    )

    parser = _Parser(
        prog="orrery", description="Orrery command line tool (SpacetimeDB 1.12 compatible).", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True

    def command(
        name: str,
        help_text: str,
        parent: argparse._SubParsersAction[_CommandParser] | None = None,
        unstable: bool = False,
    ) -> argparse.ArgumentParser:
        description = f"{help_text}. {UNSTABLE_WARNING}" if unstable else help_text
        return (parent or sub).add_parser(name, help=help_text, description=description, parents=[common])

    p = command("start", "Start a standalone Orrery server (gateway, control plane, one host node)")
    p.add_argument(
        "--listen-addr", default="127.0.0.1:3000", help="address to listen on (default 127.0.0.1:3000)"
    )
    p.add_argument("--data-dir", help="data directory (default ~/.local/share/orrery/data)")
    p.add_argument(
        "--metrics-addr", default="",
        help="host:port to serve /metrics, /healthz and /readyz on as well (the main port serves "
        "/v1/metrics, /healthz and /readyz anyway)",
    )  # fmt: skip
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log level (default info)",
    )
    p.add_argument(
        "--transport", default=DEFAULT_STANDALONE_TRANSPORT, choices=STANDALONE_TRANSPORTS,
        help="split: the gateway (HTTP, WebSockets) and the host node (the databases) as two "
        "processes joined by a unix socket, using two CPUs (the default); inprocess: one process; "
        "grpc: one process, the gateway reaching the host node over gRPC on 127.0.0.1",
    )  # fmt: skip
    add_budget_options(p)

    p = command("gateway", "Run a cluster gateway: the public API in front of a cluster's nodes")
    p.add_argument("--listen-addr", default="127.0.0.1:3000", help="address to listen on (default 127.0.0.1:3000)")
    p.add_argument(
        "--etcd", required=True, metavar="ENDPOINTS",
        help="etcd client endpoints, host:port[,host:port...] (lmdb:PATH: an embedded store, for development)",
    )  # fmt: skip
    p.add_argument("--etcd-prefix", default="/orrery", help="the cluster's key prefix in etcd (default /orrery)")
    p.add_argument(
        "--keys-dir", required=True,
        help="directory of the token signing key pair all the cluster's gateways share (created if absent)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-addr", default="",
        help="host:port to serve /metrics, /healthz and /readyz on as well (the gateway's port serves "
        "/v1/metrics, /healthz and /readyz anyway)",
    )  # fmt: skip
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="server log level (default info)",
    )  # fmt: skip
    add_secret_option(p)
    p = command("controlplane", "Run one control plane of a cluster (etcd holds the state)")
    _controlplane_options(p)

    p = command("publish", "Create or update a database from a compiled module")
    p.add_argument(
        "-c",
        "--clear-database",
        "--delete-data",
        dest="clear_database",
        action="store_true",
        help="first DESTROY all data of the existing database",
    )
    p.add_argument("-b", "--bin-path", help="the compiled .wasm module to publish")
    p.add_argument(
        "--num-replicas", type=int,
        help="replicas of a new database in a cluster (default: 3 with 3 or more nodes, else 1)",
    )  # fmt: skip
    p.add_argument(
        "--break-clients",
        action="store_true",
        help="publish an update that disconnects the connected clients without asking "
        "(it never deletes data: that needs --clear-database)",
    )
    _server(p, "the server to host the database")
    _anonymous(p)
    _yes(p)
    p.add_argument("name", nargs="?", help="database name or identity (omit for a new unnamed database)")

    p = command("call", "Invoke a reducer or procedure", unstable=True)
    _database(p, "to call into")
    p.add_argument("function", help="the reducer or procedure")
    p.add_argument("arguments", nargs="*", help="arguments as JSON (strings may be left unquoted)")
    _server(p)
    _anonymous(p)
    _yes(p)

    p = command("sql", "Run a SQL query on a database", unstable=True)
    _database(p, "to query")
    p.add_argument("query", help="the SQL statement")
    p.add_argument("--confirmed", action="store_true", help="answer only once the transaction is durable")
    _server(p)
    _anonymous(p)
    _yes(p)

    p = command("subscribe", "Subscribe to SQL queries on a database; prints updates as JSON lines", unstable=True)
    _database(p, "to subscribe to")
    p.add_argument("query", nargs="+", help="the SQL subscription queries")
    p.add_argument(
        "-n", "--num-updates", type=int, help="exit after printing this many transaction updates"
    )
    p.add_argument(
        "-t", "--timeout", type=float, help="exit (successfully) after this many seconds, whichever comes first"
    )
    p.add_argument(
        "--print-initial-update", action="store_true", help="also print the initial rows of the queries"
    )
    p.add_argument(
        "--confirmed", action="store_true", help="print transactions only once they are durable"
    )
    _server(p)
    _anonymous(p)
    _yes(p)

    p = command("logs", "Print the module logs of a database")
    _database(p, "to print logs from")
    p.add_argument(
        "-n", "--num-lines", type=int, help="how many of the most recent lines (default: all, 10 with -f)"
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they come")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format (default text)")
    _server(p)
    _yes(p)

    p = command("describe", "Describe the tables and reducers of a database", unstable=True)
    _database(p, "to describe")
    p.add_argument(
        "entity_type", nargs="?", choices=["reducer", "table"], help="describe only this reducer/table"
    )
    p.add_argument("entity_name", nargs="?", help="its name")
    p.add_argument("--json", action="store_true", help="print the module schema as JSON")
    _server(p)
    _anonymous(p)
    _yes(p)

    p = command("delete", "Delete a database")
    _database(p, "to delete")
    _server(p)
    _yes(p)

    p = command("rename", "Set the name of a database")
    p.add_argument("--to", required=True, help="the new name")
    _database(p, "to rename")
    _server(p)
    _yes(p)

    p = command("list", "List the databases owned by your identity", unstable=True)
    _server(p, "the server to list databases on")
    _yes(p)

    p = command("login", "Log in (a server-issued identity) and save the token")
    p.add_argument("--server-issued-login", metavar="SERVER", help="log in to this server directly")
    p.add_argument("--token", help="save this token instead of asking a server for one")
    _server(p, "the server to log in to")
    login_sub = p.add_subparsers(dest="login_command", metavar="show", parser_class=_CommandParser)
    show = command("show", "Show the identity you are logged in as", login_sub)
    show.add_argument("--token", dest="show_token", action="store_true", help="also show the token")

    command("logout", "Forget the saved token")

    p = command("server", "Manage saved servers", unstable=True)
    server_sub = p.add_subparsers(dest="server_command", metavar="SUBCOMMAND", parser_class=_CommandParser)
    server_sub.required = True
    add = command("add", "Save a new server", server_sub)
    add.add_argument("name", help="nickname for the server")
    add.add_argument("url", nargs="?", help="its URL, e.g. http://127.0.0.1:3000")
    add.add_argument("--url", dest="url_option", help=argparse.SUPPRESS)
    add.add_argument("-d", "--default", action="store_true", help="make it the default server")
    add.add_argument("--no-fingerprint", action="store_true", help="do not fetch the server's public key")
    command("list", "List saved servers", server_sub)
    sd = command("set-default", "Set the default server", server_sub)
    sd.add_argument("server_name", metavar="SERVER", help="nickname, host or URL of a saved server")

    # --- cluster mode: the processes and their operation ---
    p = command("hostnode", "Run one host node of a cluster (docs/cluster.md)")
    hostnode_arguments(p)
    add_cluster_parsers(sub, command)
    return parser


def _command_key(args: argparse.Namespace) -> str:
    if args.command == "login" and getattr(args, "login_command", None) == "show":
        return "login show"
    if args.command == "server":
        return f"server {args.server_command}"
    if args.command == "cluster":
        return f"cluster {args.cluster_command}"
    return str(args.command)


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code (0 on success)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        key = _command_key(args)
        if key.startswith("server "):
            print(UNSTABLE_WARNING + "\n", file=err)
        config = CliConfig.load(default_config_path(getattr(args, "config", None)))
        session = Session(config, out=out, err=err, stdin=stdin or sys.stdin)
        if key == "hostnode":
            return run_hostnode(args, build_parser())
        return {**COMMANDS, **CLUSTER_COMMANDS}[key](session, args)
    except CliError as e:
        print(f"Error: {e.message}", file=err, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
