"""The config file: defaults, persistence, servers, and reading the identity out of a token."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orrery.cli_config import CliConfig, decode_identity, default_config_path
from orrery.cli_errors import CliError
from tests.cli.conftest import ALICE, make_token


def test_path_precedence(tmp_path: Path) -> None:
    assert default_config_path("x.toml", {"ORRERY_CONFIG": "/e.toml"}) == Path("x.toml")
    assert default_config_path(None, {"ORRERY_CONFIG": "/e.toml"}) == Path("/e.toml")
    assert default_config_path(None, {"XDG_CONFIG_HOME": "/xdg"}) == Path("/xdg/orrery/cli.toml")


def test_tests_never_see_the_real_home(private_home: Path) -> None:
    assert Path.home() == private_home
    assert os.environ["ORRERY_CONFIG"].startswith(str(private_home.parent))


def test_missing_file_gives_local_default(tmp_path: Path) -> None:
    cfg = CliConfig.load(tmp_path / "none.toml")
    assert cfg.host_url(None) == "http://127.0.0.1:3000"
    assert cfg.host_url("local") == "http://127.0.0.1:3000"
    assert cfg.token is None
    assert not (tmp_path / "none.toml").exists()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cli.toml"
    cfg = CliConfig.load(path)
    cfg.token = make_token()
    cfg.add_server("https://db.example.com:8443/", "prod", 'key with "quotes"\n-----END-----\n')
    cfg.set_default("prod")
    cfg.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CliConfig.load(path)
    assert again.token == cfg.token
    assert again.default_server == "prod"
    assert again.host_url(None) == "https://db.example.com:8443"
    assert again.find_server("db.example.com:8443").ecdsa_public_key == 'key with "quotes"\n-----END-----\n'
    assert [s.nickname for s in again.servers] == ["local", "prod"]
    assert "spacetimedb_token" in path.read_text()


def test_server_lookup_by_nickname_host_or_url(tmp_path: Path) -> None:
    cfg = CliConfig.load(tmp_path / "c.toml")
    assert cfg.host_url("127.0.0.1:3000") == "http://127.0.0.1:3000"
    assert cfg.host_url("http://127.0.0.1:3000") == "http://127.0.0.1:3000"
    assert cfg.host_url("http://other:1/") == "http://other:1"  # a URL needs no saved entry
    with pytest.raises(CliError, match="No such saved server configuration: nope"):
        cfg.host_url("nope")


def test_add_server_refuses_duplicates_and_bad_urls(tmp_path: Path) -> None:
    cfg = CliConfig.load(tmp_path / "c.toml")
    with pytest.raises(CliError, match="nickname local already in use"):
        cfg.add_server("http://x:1", "local", None)
    with pytest.raises(CliError, match="already configured for host: 127.0.0.1:3000"):
        cfg.add_server("http://127.0.0.1:3000", "other", None)
    with pytest.raises(CliError, match="Invalid protocol: ftp"):
        cfg.add_server("ftp://x", "x", None)
    with pytest.raises(CliError, match="Invalid url"):
        cfg.add_server("x:1", "x", None)
    with pytest.raises(CliError, match="unknown server ghost"):
        cfg.set_default("ghost")


def test_dangling_default_server(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('default_server = "gone"\n')
    with pytest.raises(CliError, match="Default server does not refer to a saved server configuration: gone"):
        CliConfig.load(path).host_url(None)


def test_invalid_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("this is = = not toml\n")
    with pytest.raises(CliError) as e:
        CliConfig.load(path)
    assert "is invalid" in e.value.message and "\n" not in e.value.message


def test_decode_identity_matches_spec_vector() -> None:
    assert decode_identity(make_token()) == ALICE
    assert decode_identity(make_token(hex_identity=ALICE)) == ALICE


@pytest.mark.parametrize(
    ("token", "match"),
    [
        ("abc", "does not look like a JSON web token"),
        ("a.!!!.c", "cannot be decoded"),
        (make_token().replace(".", ".x", 1), "cannot be decoded"),
        (make_token(hex_identity="c200" + "0" * 60), "does not match"),
    ],
)
def test_decode_identity_errors(token: str, match: str) -> None:
    with pytest.raises(CliError, match=match):
        decode_identity(token)


def test_decode_identity_needs_iat() -> None:
    import base64

    payload = base64.b64encode(b'{"sub":"a","iss":"b"}').decode().rstrip("=")
    with pytest.raises(CliError, match="no `iat` claim"):
        decode_identity(f"h.{payload}.s")
