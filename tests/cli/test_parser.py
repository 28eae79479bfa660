"""Argument parsing: the 1.12 command shapes, and one-line usage errors."""

from __future__ import annotations

import pytest

from orrery.cli import build_parser
from tests.cli.conftest import run_cli


def parse(*argv: str) -> dict[str, object]:
    return vars(build_parser().parse_args(list(argv)))


def test_publish_forms() -> None:
    a = parse("publish", "-c", "-s", "local", "--bin-path", "m.wasm", "chat")
    assert (a["clear_database"], a["server"], a["bin_path"], a["name"]) == (True, "local", "m.wasm", "chat")
    a = parse("publish", "--delete-data", "-b", "m.wasm")
    assert (a["clear_database"], a["name"]) == (True, None)
    assert parse("publish", "--clear-database", "x")["clear_database"] is True
    assert parse("publish", "x")["clear_database"] is False
    assert parse("publish", "x")["break_clients"] is False
    assert parse("publish", "x", "--break-clients")["break_clients"] is True


def test_call_takes_any_number_of_arguments() -> None:
    a = parse("call", "chat", "send_message", "hello world", "-5", '{"a":1}')
    assert a["arguments"] == ["hello world", "-5", '{"a":1}']
    assert parse("call", "chat", "init")["arguments"] == []


def test_logs_sql_describe() -> None:
    a = parse("logs", "chat", "-f", "-n", "5")
    assert (a["follow"], a["num_lines"], a["format"]) == (True, 5, "text")
    a = parse("sql", "chat", "SELECT * FROM user", "--confirmed")
    assert (a["query"], a["confirmed"]) == ("SELECT * FROM user", True)
    a = parse("describe", "chat", "--json", "table", "user")
    assert (a["json"], a["entity_type"], a["entity_name"]) == (True, "table", "user")


def test_rename_login_server() -> None:
    a = parse("rename", "--to", "new", "old")
    assert (a["to"], a["database"]) == ("new", "old")
    assert parse("login", "show", "--token")["show_token"] is True
    assert parse("login", "--token", "t")["token"] == "t"
    a = parse("server", "add", "prod", "http://h:1", "--default")
    assert (a["name"], a["url"], a["default"]) == ("prod", "http://h:1", True)
    assert parse("server", "add", "prod", "--url", "http://h:1")["url_option"] == "http://h:1"
    assert parse("server", "set-default", "prod")["server_name"] == "prod"


def test_config_flag_before_or_after_the_command() -> None:
    assert parse("--config", "a.toml", "list")["config"] == "a.toml"
    assert parse("list", "--config", "b.toml")["config"] == "b.toml"
    assert "config" not in parse("list")


@pytest.mark.parametrize(
    "argv",
    [("frobnicate",), ("sql", "chat"), ("rename", "x"), ("logs", "db", "-n", "many"), ("server",), ()],
)
def test_usage_errors_are_one_line_with_exit_2(argv: tuple[str, ...]) -> None:
    r = run_cli(*argv)
    assert r.code == 2
    assert r.err.count("\n") == 1 and r.err.startswith("Error: "), r.err
    assert r.out == ""


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        run_cli("publish", "--help")
    assert e.value.code == 0
    assert "--bin-path" in capsys.readouterr().out


def test_options_may_come_between_positionals() -> None:
    a = parse("call", "chat", "send_message", "-s", "local", "hello", "--anonymous", "world")
    assert (a["server"], a["anonymous"], a["arguments"]) == ("local", True, ["hello", "world"])
    a = parse("publish", "--bin-path", "m.wasm", "chat", "-c", "--yes")
    assert (a["name"], a["clear_database"], a["yes"]) == ("chat", True, True)
