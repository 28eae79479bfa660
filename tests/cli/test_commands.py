"""Each command against a canned server: the requests it sends (client-api.md §8) and what it prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orrery.cli_config import CliConfig
from sats.json import product_type_to_json, type_to_json
from sats.types import IDENTITY, STRING, U32, option, product
from tests.cli.conftest import ALICE, make_token, run_cli
from tests.cli.fake_server import Canned, FakeServer

DB = "c200" + "ab" * 30
TOKEN = make_token()


def login_to(server: FakeServer, token: str | None = TOKEN) -> None:
    """Make the fake server the default and save ``token``."""
    cfg = CliConfig.load(Path(os.environ["ORRERY_CONFIG"]))
    cfg.add_server(server.url, "fake", None)
    cfg.set_default("fake")
    cfg.token = token
    cfg.save()


def saved() -> CliConfig:
    return CliConfig.load(Path(os.environ["ORRERY_CONFIG"]))


def resolve(server: FakeServer, name: str = "chat", identity: str = DB) -> None:
    server.routes[("GET", f"/v1/database/{name}/identity")] = Canned.text(identity)


SCHEMA = {
    "typespace": {"types": [type_to_json(product(("identity", IDENTITY), ("name", option(STRING))))]},
    "tables": [
        {
            "name": "user",
            "product_type_ref": 0,
            "primary_key": [0],
            "indexes": [],
            "constraints": [],
            "sequences": [],
            "schedule": {"none": []},
            "table_type": {"User": []},
            "table_access": {"Public": []},
        }
    ],
    "reducers": [
        {
            "name": "set_name",
            "params": product_type_to_json(product(("name", STRING))),
            "lifecycle": {"none": []},
        },
        {
            "name": "add",
            "params": product_type_to_json(product(("n", U32), ("label", STRING))),
            "lifecycle": {"none": []},
        },
        {"name": "init", "params": {"elements": []}, "lifecycle": {"some": {"Init": []}}},
    ],
    "types": [],
    "misc_exports": [
        {"Procedure": {"name": "greet", "params": {"elements": []}, "return_type": {"String": []}}}
    ],
    "row_level_security": [],
}


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "m.wasm"
    path.write_bytes(b"\0asm\1\0\0\0")
    return path


# --------------------------------------------------------------------------- publish


def test_publish_named_creates(server: FakeServer, module: Path) -> None:
    login_to(server)
    server.routes[("PUT", "/v1/database/chat")] = Canned.json(
        {"Success": {"domain": "chat", "database_identity": DB, "op": "created"}}
    )
    r = run_cli("publish", "--bin-path", str(module), "chat")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        f"(WASM) Skipping build. Instead we are publishing {module}",
        f"Uploading to fake => {server.url}",
        "Checking for breaking changes...",
        "Publishing module...",
        f"Created new database with name: chat, identity: {DB}",
    ]
    # pre_publish answers 404 (the fake server's unknown route): a new database, nothing to check.
    pre, req = server.requests
    assert (pre.method, pre.path) == ("POST", "/v1/database/chat/pre_publish")
    assert pre.query == {"pretty_print_style": "AnsiColor", "host_type": "Wasm"}
    assert pre.body == module.read_bytes() and pre.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.query == {"host_type": "Wasm"}
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.body == module.read_bytes()


def test_publish_unnamed_and_update(server: FakeServer, module: Path) -> None:
    login_to(server)
    server.routes[("POST", "/v1/database")] = Canned.json(
        {"Success": {"domain": None, "database_identity": DB, "op": "created"}}
    )
    r = run_cli("publish", "-b", str(module))
    assert r.out.splitlines()[-1] == f"Created new database with identity: {DB}"
    server.routes[("PUT", f"/v1/database/{DB}")] = Canned.json(
        {"Success": {"domain": None, "database_identity": DB, "op": "updated"}}
    )
    r = run_cli("publish", "-b", str(module), DB)
    assert r.out.splitlines()[-1] == f"Updated database with identity: {DB}"


def test_publish_num_replicas_goes_in_the_query(server: FakeServer, module: Path) -> None:
    login_to(server)
    server.routes[("POST", "/v1/database")] = Canned.json(
        {"Success": {"domain": None, "database_identity": DB, "op": "created"}}
    )
    r = run_cli("publish", "-b", str(module), "--num-replicas", "3")
    assert r.code == 0, r.err
    assert server.requests[-1].query == {"host_type": "Wasm", "num_replicas": "3"}


def test_publish_clear_asks_unless_yes(server: FakeServer, module: Path) -> None:
    login_to(server)
    server.routes[("PUT", "/v1/database/chat")] = Canned.json(
        {"Success": {"domain": "chat", "database_identity": DB, "op": "updated"}}
    )
    r = run_cli("publish", "-c", "-b", str(module), "chat", stdin="n\n")
    assert r.code == 1 and r.error_line == "Error: Aborted."
    assert server.requests == []
    r = run_cli("publish", "-c", "-b", str(module), "chat", stdin="y\n")
    assert r.code == 0 and server.requests[-1].query == {"clear": "true", "host_type": "Wasm"}
    r = run_cli("publish", "--clear-database", "--yes", "-b", str(module), "chat")
    assert r.code == 0 and "Skipping confirmation due to --yes" in r.out
    assert run_cli("publish", "-c", "-b", str(module)).code == 1


def _updated(name: str = "chat") -> Canned:
    return Canned.json({"Success": {"domain": name, "database_identity": DB, "op": "updated"}})


def _auto(break_clients: bool, token: str = "0xabc123") -> Canned:
    plan = "Updating the module; the automatic migration will:\n- create table `note`\n"
    return Canned.json({"AutoMigrate": {"migrate_plan": plan, "break_clients": break_clients, "token": token}})


def test_publish_update_sends_the_pre_publish_token(server: FakeServer, module: Path) -> None:
    """As 1.12: after an automatic plan, ``policy=BreakClients`` and its token, whatever the plan."""
    login_to(server)
    server.routes[("POST", "/v1/database/chat/pre_publish")] = _auto(False)
    server.routes[("PUT", "/v1/database/chat")] = _updated()
    r = run_cli("publish", "-b", str(module), "chat")
    assert r.code == 0, r.err
    assert r.out.splitlines()[2:] == [
        "Checking for breaking changes...",
        "Updating the module; the automatic migration will:",
        "- create table `note`",
        "Publishing module...",
        f"Updated database with name: chat, identity: {DB}",
    ]
    assert server.paths() == ["POST /v1/database/chat/pre_publish", "PUT /v1/database/chat"]
    assert server.requests[1].query == {"token": "0xabc123", "policy": "BreakClients", "host_type": "Wasm"}


def test_publish_breaking_clients_asks_unless_allowed(
    server: FakeServer, module: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    login_to(server)
    monkeypatch.setenv("NO_COLOR", "1")
    server.routes[("POST", "/v1/database/chat/pre_publish")] = _auto(True, "0xfeed")
    server.routes[("PUT", "/v1/database/chat")] = _updated()
    prompt = "The above changes will BREAK existing clients. Do you want to proceed? [y/N]"
    r = run_cli("publish", "-b", str(module), "chat", stdin="n\n")
    assert (r.code, r.error_line) == (1, "Error: Publishing aborted by user")
    assert prompt in r.out and r.out.splitlines()[-1].endswith("Aborting")
    assert server.paths() == ["POST /v1/database/chat/pre_publish"]
    assert server.requests[0].query["pretty_print_style"] == "NoColor"
    r = run_cli("publish", "-b", str(module), "chat", stdin="y\n")
    assert r.code == 0, r.err
    assert server.requests[-1].query == {"token": "0xfeed", "policy": "BreakClients", "host_type": "Wasm"}
    for flag in ("--break-clients", "--yes", "-y"):
        server.requests.clear()
        r = run_cli("publish", flag, "-b", str(module), "chat")
        assert r.code == 0 and "Skipping confirmation due to --yes" in r.out and prompt not in r.out, r
        assert server.requests[-1].query["token"] == "0xfeed"


def test_publish_refuses_a_manual_migration(server: FakeServer, module: Path) -> None:
    login_to(server)
    reason = "the update needs a manual migration: table `message` would be removed"
    server.routes[("POST", "/v1/database/chat/pre_publish")] = Canned.json({"ManualMigrate": {"reason": reason}})
    r = run_cli("publish", "-y", "-b", str(module), "chat")
    assert r.code == 1 and r.error_line.startswith("Error: Aborting because publishing would require manual migration")
    assert r.out.splitlines()[-2:] == [reason, "Aborting publish due to required manual migration."]
    assert server.paths() == ["POST /v1/database/chat/pre_publish"]
    # Clearing skips the check (the data goes anyway).
    server.routes[("PUT", "/v1/database/chat")] = _updated()
    assert run_cli("publish", "-c", "-y", "-b", str(module), "chat").code == 0
    assert server.paths()[-1] == "PUT /v1/database/chat" and server.requests[-1].query["clear"] == "true"
    server.routes[("POST", "/v1/database/chat/pre_publish")] = Canned.text("no access", 403)
    r = run_cli("publish", "-b", str(module), "chat")
    assert r.error_line == "Error: Pre-publish check failed with status 403 Forbidden: no access"


def test_publish_without_token_logs_in_first(server: FakeServer, module: Path) -> None:
    login_to(server, token=None)
    server.routes[("POST", "/v1/identity")] = Canned.json({"identity": ALICE, "token": TOKEN})
    server.routes[("POST", "/v1/database")] = Canned.json(
        {"Success": {"domain": None, "database_identity": DB, "op": "created"}}
    )
    r = run_cli("publish", "-b", str(module))
    assert r.code == 0, r.err
    assert server.paths() == ["POST /v1/identity", "POST /v1/database"]
    assert server.requests[1].headers["authorization"] == f"Bearer {TOKEN}"
    assert saved().token == TOKEN
    assert "We have logged in directly to your target server." in r.err


def test_publish_errors(server: FakeServer, module: Path) -> None:
    login_to(server)
    server.routes[("PUT", "/v1/database/theirs")] = Canned.json({"PermissionDenied": {"name": "theirs"}}, 401)
    r = run_cli("publish", "-b", str(module), "theirs")
    assert r.code == 1
    assert r.error_line.startswith(
        "Error: The database theirs is not registered to the identity you provided."
    )
    server.routes[("PUT", "/v1/database/bad")] = Canned.text("invalid module: no memory export", 500)
    r = run_cli("publish", "-b", str(module), "bad")
    assert "invalid module: no memory export (HTTP 500" in r.error_line
    assert run_cli("publish", "-b", str(module), "Bad_Name").error_line.startswith(
        "Error: invalid characters in database name `Bad_Name`"
    )
    assert (
        run_cli("publish", "-b", str(module), "a--b").error_line
        == "Error: invalid hyphen in database name `a--b`"
    )
    assert run_cli("publish", "-b", "/no/such.wasm", "x").error_line.startswith(
        "Error: cannot read module file"
    )
    assert run_cli("publish", "x").error_line.startswith("Error: orrery cannot build modules")


# --------------------------------------------------------------------------- call


def test_call_quotes_string_arguments(server: FakeServer) -> None:
    login_to(server)
    resolve(server)
    server.routes[("GET", f"/v1/database/{DB}/schema")] = Canned.json(SCHEMA)
    server.routes[("POST", f"/v1/database/{DB}/call/add")] = Canned(200)
    server.routes[("POST", f"/v1/database/{DB}/call/set_name")] = Canned(200)
    r = run_cli("call", "chat", "add", "5", "five")
    assert r.code == 0 and r.out == "", r.err
    assert server.paths() == [
        "GET /v1/database/chat/identity",
        f"GET /v1/database/{DB}/schema",
        f"POST /v1/database/{DB}/call/add",
    ]
    assert server.requests[1].query == {"version": "9"}
    call = server.requests[2]
    assert (call.body, call.headers["content-type"]) == (b'[5, "five"]', "application/json")
    run_cli("call", DB, "set_name", '"already quoted"', "extra", "args")
    assert server.requests[-1].body == b'["already quoted"]'  # 1.12 drops arguments beyond the parameters
    run_cli("call", DB, "set_name", 'say "hi')
    assert server.requests[-1].body == b'["say "hi"]'


def test_call_errors(server: FakeServer) -> None:
    login_to(server)
    server.routes[("GET", f"/v1/database/{DB}/schema")] = Canned.json(SCHEMA)
    r = run_cli("call", DB, "set_nam")
    assert r.code == 1
    assert r.error_line == (
        f"Error: No such reducer OR procedure `set_nam` for database `{DB}` resolving to identity "
        f"`{DB}`. Existing reducers and procedures: set_name, add, greet"
    )
    server.routes[("POST", f"/v1/database/{DB}/call/set_name")] = Canned.text("name must not be empty", 530)
    assert "name must not be empty (HTTP 530" in run_cli("call", DB, "set_name", "").error_line
    server.routes[("POST", f"/v1/database/{DB}/call/add")] = Canned.text(
        "invalid arguments for reducer add: invalid type: string, expected u32", 400
    )
    line = run_cli("call", DB, "add", "x", "y").error_line
    assert line.startswith("Error: Invalid arguments provided for reducer `add`")
    assert line.endswith("(the reducer has the signature add(n: u32, label: String))")
    assert run_cli("call", "nowhere", "f").error_line == "Error: failed to find database `nowhere`."


def test_call_procedure_prints_result(server: FakeServer) -> None:
    login_to(server)
    server.routes[("GET", f"/v1/database/{DB}/schema")] = Canned.json(SCHEMA)
    server.routes[("POST", f"/v1/database/{DB}/call/greet")] = Canned(200, b'"hello"', "application/json")
    r = run_cli("call", DB, "greet")
    assert (r.code, r.out) == (0, '"hello"\n')


# --------------------------------------------------------------------------- sql


def test_sql_prints_table(server: FakeServer) -> None:
    login_to(server)
    resolve(server)
    body = [
        {
            "schema": product_type_to_json(product(("identity", IDENTITY), ("name", option(STRING)))),
            "rows": [[["0x" + ALICE], [0, "Alice"]], [["0x" + DB], [1, []]]],
            "total_duration_micros": 5,
            "stats": {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0},
        }
    ]
    server.routes[("POST", f"/v1/database/{DB}/sql")] = Canned.json(body)
    r = run_cli("sql", "chat", "SELECT * FROM user")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        " identity                                                           | name             ",
        "--------------------------------------------------------------------+------------------",
        f' 0x{ALICE} | (some = "Alice") ',
        f" 0x{DB} | (none = ())      ",
    ]
    assert server.requests[-1].body == b"SELECT * FROM user"
    assert r.err.startswith("WARNING: This command is UNSTABLE")
    run_cli("sql", "chat", "SELECT 1", "--confirmed")
    assert server.requests[-1].query == {"confirmed": "true"}


def test_sql_errors(server: FakeServer) -> None:
    login_to(server)
    server.routes[("POST", f"/v1/database/{DB}/sql")] = Canned.text(
        "no such table: `foo`. If the table exists, it may be marked private.", 400
    )
    r = run_cli("sql", DB, "SELECT * FROM foo")
    assert r.code == 1
    assert r.error_line.startswith(
        "Error: no such table: `foo`. If the table exists, it may be marked private. (HTTP 400"
    )
    server.routes[("POST", f"/v1/database/{DB}/sql")] = Canned(200, b"[]", "application/json; charset=utf-8")
    assert "did not have content-type: application/json" in run_cli("sql", DB, "SELECT 1").error_line


# --------------------------------------------------------------------------- logs


LOG_LINES = [
    {
        "level": "Info",
        "ts": 0,
        "target": "__spacetimedb__",
        "filename": "__spacetimedb__",
        "function": "__spacetimedb__",
        "message": "Database initialized",
    },
    {
        "level": "Info",
        "ts": 1_500,
        "filename": "chat.c",
        "line_number": 7,
        "function": "set_name",
        "message": "hi",
    },
]


def test_logs_render_and_query(server: FakeServer) -> None:
    login_to(server)
    chunks = [json.dumps(r).encode() + b"\n" for r in LOG_LINES]
    server.routes[("GET", f"/v1/database/{DB}/logs")] = Canned(200, chunks, "application/x-ndjson")
    r = run_cli("logs", DB)
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "1970-01-01T00:00:00Z  INFO: Database initialized",
        "1970-01-01T00:00:00.001500Z  INFO: set_name chat.c:7: hi",
    ]
    assert server.requests[-1].query == {"follow": "false"}
    run_cli("logs", DB, "-f")
    assert server.requests[-1].query == {"num_lines": "10", "follow": "true"}
    run_cli("logs", DB, "-n", "3")
    assert server.requests[-1].query == {"num_lines": "3", "follow": "false"}
    r = run_cli("logs", DB, "--format", "json")
    assert [json.loads(line) for line in r.out.splitlines()] == LOG_LINES


def test_logs_forbidden(server: FakeServer) -> None:
    login_to(server)
    server.routes[("GET", f"/v1/database/{DB}/logs")] = Canned.text(
        f"{ALICE} is not authorized to perform action on database {DB}: view module logs", 403
    )
    r = run_cli("logs", DB)
    assert r.code == 1 and "view module logs (HTTP 403" in r.error_line


# --------------------------------------------------------------------------- describe, delete, rename, list


def test_describe(server: FakeServer) -> None:
    login_to(server)
    server.routes[("GET", f"/v1/database/{DB}/schema")] = Canned.json(SCHEMA)
    r = run_cli("describe", DB, "--json")
    assert json.loads(r.out) == SCHEMA and r.out.startswith('{\n  "typespace": {')
    r = run_cli("describe", DB, "--json", "reducer", "set_name")
    assert json.loads(r.out)["name"] == "set_name"
    assert run_cli("describe", DB, "--json", "table", "nope").error_line == "Error: no such table: `nope`"
    r = run_cli("describe", DB)
    assert "  user (public)" in r.out.splitlines() and "  set_name(name: String)" in r.out.splitlines()


def test_delete(server: FakeServer) -> None:
    login_to(server)
    resolve(server)
    server.routes[("DELETE", f"/v1/database/{DB}")] = Canned(200)
    r = run_cli("delete", "chat")
    assert (r.code, r.out) == (0, "")
    assert server.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
    server.routes[("DELETE", f"/v1/database/{DB}")] = Canned.text(
        "x is not authorized ...: delete database", 403
    )
    assert "delete database (HTTP 403" in run_cli("delete", DB).error_line


def test_rename(server: FakeServer) -> None:
    login_to(server)
    server.routes[("PUT", "/v1/database/chat/names")] = Canned.json("Success")
    r = run_cli("rename", "--to", "lobby", "chat")
    assert (r.code, r.out) == (0, "Name set to lobby for identity chat.\n")
    req = server.requests[-1]
    assert (req.body, req.headers["content-type"]) == (b'["lobby"]', "application/json")
    server.routes[("PUT", "/v1/database/chat/names")] = Canned.json(
        {"NotYourDatabase": {"database": DB}}, 401
    )
    assert (
        run_cli("rename", "--to", "x", "chat").error_line
        == "Error: You cannot rename chat because it is owned by another identity."
    )
    server.routes[("PUT", "/v1/database/chat/names")] = Canned.json(
        {"OtherError": "Cannot rename to x because it already is in use."}, 400
    )
    assert (
        run_cli("rename", "--to", "x", "chat").error_line
        == "Error: Cannot rename to x because it already is in use."
    )
    server.routes[("PUT", "/v1/database/chat/names")] = Canned.json("DatabaseNotFound", 404)
    assert run_cli("rename", "--to", "x", "chat").error_line == "Error: Database chat not found"


def test_list(server: FakeServer) -> None:
    login_to(server)
    route = ("GET", f"/v1/identity/{ALICE}/databases")
    server.routes[route] = Canned.json({"identities": [DB]})
    r = run_cli("list")
    assert r.out.splitlines() == [
        f"Associated database identities for {ALICE}:",
        "",
        " db_identity" + " " * 54,
        "-" * 66,
        f" {DB} ",
    ]
    server.routes[route] = Canned.json({"identities": []})
    assert run_cli("list").out == f"No databases found for {ALICE}.\n"


# --------------------------------------------------------------------------- login, logout, server


def test_login_flow(server: FakeServer) -> None:
    login_to(server, token=None)
    assert run_cli("login", "show").out == "You are not logged in. Run `orrery login` to log in.\n"
    server.routes[("POST", "/v1/identity")] = Canned.json({"identity": ALICE, "token": TOKEN})
    r = run_cli("login")
    assert r.code == 0 and saved().token == TOKEN
    assert run_cli("login").out.startswith("You are already logged in.")
    assert run_cli("login", "show").out == f"You are logged in as {ALICE}\n"
    assert (
        run_cli("login", "show", "--token").out.splitlines()[1]
        == f"Your auth token (don't share this!) is {TOKEN}"
    )
    assert run_cli("logout").code == 0 and saved().token is None
    other = make_token(sub="bob")
    assert run_cli("login", "--token", other).code == 0 and saved().token == other
    assert run_cli("login", "--token", "garbage").code == 1


def test_server_commands(server: FakeServer) -> None:
    server.routes[("GET", "/v1/identity/public-key")] = Canned(
        200,
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "application/pem-certificate-chain",
    )
    r = run_cli("server", "add", "fake", server.url + "/", "--default")
    assert r.code == 0, r.err
    host = server.url.removeprefix("http://")
    assert r.out.splitlines()[-2:] == [f"Host: {host}", "Protocol: http"]
    assert saved().default_server == "fake"
    assert saved().find_server("fake").ecdsa_public_key.startswith("-----BEGIN PUBLIC KEY-----")
    r = run_cli("server", "list")
    lines = r.out.splitlines()
    assert lines[0].split() == ["DEFAULT", "HOSTNAME", "PROTOCOL", "NICKNAME"]
    assert lines[1].split() == ["127.0.0.1:3000", "http", "local"]
    assert lines[2].split() == ["***", host, "http", "fake"]
    assert run_cli("server", "set-default", "local").code == 0 and saved().default_server == "local"
    assert (
        run_cli("server", "set-default", "ghost").error_line
        == "Error: Cannot set default server to unknown server ghost"
    )
    assert run_cli("server", "add", "fake", "http://x:1", "--no-fingerprint").error_line.startswith(
        "Error: Server nickname fake already in use"
    )
    assert run_cli("server", "add", "n", "http://h:2", "--no-fingerprint").code == 0


def test_unreachable_server_is_named(server: FakeServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    r = run_cli("sql", "-s", url, "chat", "SELECT 1")
    assert r.code == 1
    assert r.error_line.startswith(f"Error: cannot connect to the server at {url}: connection refused")
    assert run_cli("server", "add", "x", url).code == 1


def test_unknown_server_nickname() -> None:
    assert run_cli("list", "-s", "prod").error_line.startswith(
        "Error: No such saved server configuration: prod"
    )


def test_requests_carry_no_token_when_anonymous(server: FakeServer) -> None:
    login_to(server)
    server.routes[("POST", f"/v1/database/{DB}/sql")] = Canned.json([])
    assert run_cli("sql", DB, "SELECT 1", "--anonymous").code == 0
    assert "authorization" not in server.requests[-1].headers
