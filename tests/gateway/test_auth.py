"""gateway.auth: key files, token format (§7.1), identity vectors (§7.2), validation (§7.4), §2 parsing."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import (
    EXP_LEEWAY,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    AuthError,
    BadSignature,
    Claims,
    InvalidClaims,
    InvalidToken,
    KeyFileError,
    MalformedCredentials,
    MalformedToken,
    SigningKeys,
    TokenAuthority,
    TokenExpired,
    UntrustedIssuer,
    decode_unverified,
    parse_authorization,
    token_payload,
)
from sats.identity import Identity

NOW = 1_760_000_000
_KEYS = SigningKeys.generate()
_OTHER_KEYS = SigningKeys.generate()


class FakeClock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def authority(keys: SigningKeys = _KEYS, clock: FakeClock | None = None, **kw: Any) -> TokenAuthority:
    return TokenAuthority(keys, clock=clock or FakeClock(), **kw)


def cli_decode(token: str) -> dict[str, Any]:
    """What the 1.12 CLI does (§7.6): base64 *standard* alphabet, no padding, no verification."""
    seg = token.split(".")[1]
    assert "=" not in seg
    raw = base64.b64decode(seg + "=" * (-len(seg) % 4), altchars=None, validate=True)
    return json.loads(raw)


def sign_payload(payload: dict[str, Any], keys: SigningKeys = _KEYS) -> str:
    """Sign an arbitrary payload dict (to build tokens our minting would never produce)."""
    header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"ES256"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    der = keys.private_key.sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).rstrip(b"=").decode()
    return f"{header}.{body}.{sig}"


def verify(auth: TokenAuthority, token: str) -> Claims:
    return asyncio.run(auth.verify(token))


# ----------------------------------------------------------------------------- §7.2 vectors


@pytest.mark.parametrize(
    ("iss", "sub", "hex_"),
    [
        ("localhost", "alice", "c20035600353a2e93544d898c6ed0eac323e200c0468300f22958f8b472a265d"),
        ("localhost", "bob", "c200e63a6bd07da2304dd6f5b4691d3338562ceaa43cad4624d0d181a7a6c0d4"),
        (
            "https://auth.example.com",
            "user-123",
            "c2000e9c6bea96ed193403b2bc12b1fa4e8ec2970024252762dbf8a7ddda7157",
        ),
        (
            "localhost",
            "00000000-0000-4000-8000-000000000000",
            "c200085d8c451325cc207f963918b762072fff5388fca7006b89f4a2a7d3ee5e",
        ),
    ],
)
def test_identity_vectors_through_tokens(iss: str, sub: str, hex_: str) -> None:
    auth = authority()
    claims = Claims.for_subject(iss, sub, issued_at=NOW)
    assert claims.identity.to_hex() == hex_
    token = auth.mint_token(claims)
    assert cli_decode(token)["hex_identity"] == hex_
    got = verify(auth, token)  # signed by us, so accepted whatever the issuer
    assert got.identity.to_hex() == hex_
    assert got == claims


# ----------------------------------------------------------------------------- format


def test_new_identity_token_format() -> None:
    auth = authority()
    issued = auth.new_identity()
    header_b64, payload_b64, sig_b64 = issued.token.split(".")
    assert base64.urlsafe_b64decode(header_b64 + "==") == b'{"typ":"JWT","alg":"ES256"}'
    assert len(base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))) == 64  # raw r||s
    raw = token_payload(issued.token)
    payload = json.loads(raw)
    assert list(payload) == ["hex_identity", "sub", "iss", "aud", "iat", "exp"]
    assert raw.startswith('{"hex_identity":"c200') and raw.endswith(',"exp":null}')
    assert payload["iss"] == "localhost" and payload["aud"] == ["spacetimedb"] and payload["iat"] == NOW
    assert uuid.UUID(payload["sub"]).version == 4
    assert payload["hex_identity"] == Identity.from_claims("localhost", payload["sub"]).to_hex()
    assert issued.identity == issued.claims.identity
    assert cli_decode(issued.token) == payload == decode_unverified(issued.token)
    assert auth.new_identity().identity != issued.identity


def test_round_trip_and_exp_null_accepted_forever() -> None:
    clock = FakeClock()
    auth = authority(clock=clock)
    issued = auth.new_identity()
    clock.t += 10 * 365 * 86400
    assert verify(auth, issued.token) == issued.claims
    assert auth.verify_local(issued.token) == issued.claims


def test_exp_absent_accepted() -> None:
    claims = verify(authority(), sign_payload({"sub": "s", "iss": "localhost", "iat": NOW}))
    assert claims.expires_at is None and claims.audience == ()
    assert claims.identity == Identity.from_claims("localhost", "s")


def test_aud_as_string() -> None:
    claims = verify(authority(), sign_payload({"sub": "s", "iss": "localhost", "iat": NOW, "aud": "x"}))
    assert claims.audience == ("x",)


@settings(max_examples=150, deadline=None)
@given(
    sub=st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 128),
    extra=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3),
)
def test_payload_base64_alphabets_agree(sub: str, extra: dict[str, str]) -> None:
    """Any subject/extra claims (non-ASCII, '>', '?', '~', DEL) give a payload the CLI can decode."""
    auth = authority()
    claims = Claims.for_subject("localhost", sub, issued_at=NOW, extra=extra)
    token = auth.mint_token(claims)
    seg = token.split(".")[1]
    assert "-" not in seg and "_" not in seg
    assert token_payload(token).isascii()
    decoded = cli_decode(token)
    assert decoded["sub"] == sub
    for k, v in extra.items():
        if k not in _REGISTERED:
            assert decoded[k] == v
    expected = dataclasses.replace(claims, extra={k: v for k, v in extra.items() if k not in _REGISTERED})
    assert verify(auth, token) == expected


_REGISTERED = {"hex_identity", "sub", "iss", "aud", "iat", "exp"}


# ----------------------------------------------------------------------------- websocket tokens


def test_websocket_token_resigns_with_expiry() -> None:
    clock = FakeClock()
    auth = authority(clock=clock)
    base = auth.new_identity()
    clock.t += 100
    ws = auth.websocket_token(base.claims)
    payload = cli_decode(ws.token)
    assert payload["exp"] == NOW + 100 + 60 and payload["iat"] == NOW + 100
    assert payload["sub"] == base.claims.subject and payload["hex_identity"] == base.identity.to_hex()
    assert verify(auth, ws.token).identity == base.identity
    clock.t += 60 + EXP_LEEWAY  # exactly at exp + leeway: still fine
    assert verify(auth, ws.token).expires_at == NOW + 160
    clock.t += 1
    with pytest.raises(TokenExpired) as e:
        verify(auth, ws.token)
    assert e.value.status == 401


def test_websocket_token_for_external_issuer_keeps_extra_claims() -> None:
    auth = authority()
    external = Claims.for_subject(
        "https://auth.example.com",
        "user-123",
        issued_at=1,
        audience=["app"],
        extra={"email": "a@b.c", "n": 3},
    )
    ws = auth.websocket_token(external)
    payload = json.loads(token_payload(ws.token))
    assert list(payload) == ["hex_identity", "sub", "iss", "aud", "iat", "exp", "email", "n"]
    got = verify(auth, ws.token)
    assert got.issuer == "https://auth.example.com" and got.audience == ("app",)
    assert got.extra == {"email": "a@b.c", "n": 3}
    assert got.identity.to_hex() == "c2000e9c6bea96ed193403b2bc12b1fa4e8ec2970024252762dbf8a7ddda7157"


# ----------------------------------------------------------------------------- rejections


def _tamper_payload(token: str, **changes: Any) -> str:
    h, p, s = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    payload.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{h}.{body}.{s}"


def test_forged_and_wrong_key() -> None:
    auth = authority()
    token = auth.new_identity().token
    forged = _tamper_payload(
        token, sub="mallory", hex_identity=Identity.from_claims("localhost", "mallory").to_hex()
    )
    with pytest.raises(BadSignature):
        verify(auth, forged)
    # Same claims, another server's key: local issuer → the local error (step 2), not "untrusted".
    other = authority(_OTHER_KEYS).new_identity().token
    with pytest.raises(BadSignature) as e:
        verify(auth, other)
    assert e.value.status == 401
    # Flipped signature bit.
    h, p, s = token.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=="))
    sig[5] ^= 1
    with pytest.raises(BadSignature):
        verify(auth, f"{h}.{p}.{base64.urlsafe_b64encode(bytes(sig)).rstrip(b'=').decode()}")


def test_external_issuer_without_key_source() -> None:
    other = authority(_OTHER_KEYS)
    token = other.mint_token(Claims.for_subject("https://auth.example.com", "u", issued_at=NOW))
    with pytest.raises(UntrustedIssuer, match="not trusted"):
        verify(authority(), token)


def test_external_issuer_with_key_source() -> None:
    class Source:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str | None]] = []

        async def keys_for(self, issuer: str, kid: str | None) -> Sequence[PublicKeyTypes]:
            self.calls.append((issuer, kid))
            if issuer != "https://auth.example.com":
                raise UntrustedIssuer("unknown issuer")
            return [_KEYS.public_key, _OTHER_KEYS.public_key]

    src = Source()
    auth = authority(key_source=src)
    ext = authority(_OTHER_KEYS).mint_token(
        Claims.for_subject("https://auth.example.com", "u", issued_at=NOW)
    )
    assert verify(auth, ext).subject == "u"
    assert src.calls == [("https://auth.example.com", None)]
    bad = authority(_OTHER_KEYS).mint_token(
        Claims.for_subject("https://evil.example.com", "u", issued_at=NOW)
    )
    with pytest.raises(UntrustedIssuer):
        verify(auth, bad)


@pytest.mark.parametrize("missing", ["iat", "sub", "iss"])
def test_missing_required_claims(missing: str) -> None:
    payload = {"sub": "s", "iss": "localhost", "iat": NOW}
    del payload[missing]
    with pytest.raises(InvalidClaims, match=missing):
        verify(authority(), sign_payload(payload))


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "x" * 129},
        {"sub": "é" * 65},  # 130 bytes
        {"sub": ""},
        {"iss": ""},
        {"sub": 5},
        {"iat": "1"},
        {"iat": 1.5},
        {"iat": True},
        {"exp": "never"},
        {"aud": 3},
        {"aud": ["a", 1]},
        {"hex_identity": Identity.from_claims("localhost", "bob").to_hex()},
        {"hex_identity": "nothex"},
    ],
)
def test_bad_claims_rejected(changes: dict[str, Any]) -> None:
    payload = {"sub": "alice", "iss": "localhost", "iat": NOW, **changes}
    with pytest.raises(InvalidClaims) as e:
        verify(authority(), sign_payload(payload))
    assert e.value.status == 401


def test_claim_length_limit_is_inclusive() -> None:
    payload = {"sub": "s" * 128, "iss": "i" * 128, "iat": NOW}
    assert verify(authority(), sign_payload(payload)).subject == "s" * 128
    with pytest.raises(InvalidClaims):
        Claims.for_subject("localhost", "s" * 129, issued_at=NOW)


def test_hex_identity_matching_accepted_in_any_case() -> None:
    hex_ = Identity.from_claims("localhost", "alice").to_hex().upper()
    assert verify(
        authority(), sign_payload({"sub": "alice", "iss": "localhost", "iat": NOW, "hex_identity": hex_})
    )


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "!!!.###.$$$", "eyJ9.eyJ9.AA", "é.é.é"])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(InvalidToken) as e:
        verify(authority(), token)
    assert e.value.status == 401


def test_alg_none_rejected() -> None:
    auth = authority()
    h = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"none"}').rstrip(b"=").decode()
    p = auth.new_identity().token.split(".")[1]
    with pytest.raises(BadSignature):
        verify(auth, f"{h}.{p}.")


def test_payload_not_object() -> None:
    auth = authority()
    h = auth.new_identity().token.split(".")[0]
    with pytest.raises(MalformedToken):
        decode_unverified(f"{h}.{base64.urlsafe_b64encode(b'[1]').decode()}.x")


# ----------------------------------------------------------------------------- §2


def test_parse_authorization() -> None:
    assert parse_authorization(None, None) is None
    assert parse_authorization(None, "q.q.q") == "q.q.q"
    assert parse_authorization("Bearer h.h.h", "q.q.q") == "h.h.h"
    assert parse_authorization("bearer h.h.h", None) == "h.h.h"
    assert parse_authorization("Bearer  h.h.h ", None) == "h.h.h"
    for bad in ("", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearerh.h.h", "Bearer a b", "Bearer é"):
        with pytest.raises(MalformedCredentials) as e:
            parse_authorization(bad, "q.q.q")
        assert e.value.status == 400
        assert e.value.message == "Authorization is invalid: malformed token"
        assert isinstance(e.value, AuthError)


# ----------------------------------------------------------------------------- keys


def test_keys_create_then_load(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    created = SigningKeys.load_or_create(d)
    assert stat.S_IMODE(os.stat(d / PRIVATE_KEY_FILE).st_mode) == 0o600
    assert (d / PRIVATE_KEY_FILE).read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (d / PUBLIC_KEY_FILE).read_text() == created.public_pem
    assert created.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    loaded = SigningKeys.load_or_create(d)
    assert loaded.public_pem == created.public_pem
    token = authority(created).new_identity().token
    assert authority(loaded).verify_local(token)
    assert authority(loaded).public_key_pem == created.public_pem
    assert not list(d.glob(".*tmp"))


@pytest.mark.parametrize("keep", [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE])
def test_keys_only_one_file(tmp_path: Path, keep: str) -> None:
    SigningKeys.load_or_create(tmp_path)
    for name in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE):
        if name != keep:
            (tmp_path / name).unlink()
    with pytest.raises(KeyFileError, match="exists but"):
        SigningKeys.load_or_create(tmp_path)


def test_keys_mismatched_or_garbage(tmp_path: Path) -> None:
    SigningKeys.load_or_create(tmp_path)
    (tmp_path / PUBLIC_KEY_FILE).write_text(_OTHER_KEYS.public_pem)
    with pytest.raises(KeyFileError, match="public half"):
        SigningKeys.load(tmp_path)
    (tmp_path / PRIVATE_KEY_FILE).write_text("garbage")
    with pytest.raises(KeyFileError, match="private key"):
        SigningKeys.load(tmp_path)
    with pytest.raises(KeyFileError):
        SigningKeys.load(tmp_path / "nowhere")


def test_traditional_ec_private_key_accepted(tmp_path: Path) -> None:
    keys = SigningKeys.generate()
    (tmp_path / PRIVATE_KEY_FILE).write_bytes(
        keys.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / PUBLIC_KEY_FILE).write_text(keys.public_pem)
    assert SigningKeys.load(tmp_path).public_pem == keys.public_pem


def _request(headers: dict[str, str], query: str = "") -> Any:
    from aiohttp.test_utils import make_mocked_request

    return make_mocked_request("POST", f"/v1/database/x/call/r{query}", headers=headers)


def test_a_repeated_authorization_header_is_verified_once_and_answers_the_same_caller() -> None:
    from gateway.context import Authenticator

    clock = FakeClock()
    auth = Authenticator(authority(clock=clock))
    issued = auth.authority.new_identity()
    other = auth.authority.new_identity()
    header = {"Authorization": f"Bearer {issued.token}"}

    async def body() -> None:
        first = await auth.optional(_request(header))
        again = await auth.optional(_request(header, f"?token={other.token}"))  # the header wins, cached or not
        assert first is not None and again is not None
        assert again.identity == first.identity == issued.claims.identity and again.token == issued.token
        # Only well-formed headers were remembered: a malformed one is refused every time.
        for _ in range(2):
            with pytest.raises(MalformedCredentials):
                await auth.optional(_request({"Authorization": f"Bearer  {issued.token} x"}))
        # Without the header, the query's token counts.
        by_query = await auth.optional(_request({}, f"?token={other.token}"))
        assert by_query is not None and by_query.identity == other.claims.identity
        assert await auth.optional(_request({})) is None

    asyncio.run(body())


def test_an_expiring_token_is_checked_on_every_request_and_refused_once_expired() -> None:
    from gateway.context import Authenticator

    clock = FakeClock()
    auth = Authenticator(authority(clock=clock))
    issued = auth.authority.websocket_token(auth.authority.new_identity().claims)
    header = {"Authorization": f"Bearer {issued.token}"}

    async def body() -> None:
        assert (await auth.optional(_request(header))) is not None
        assert (await auth.optional(_request(header))) is not None
        clock.t += 3600
        with pytest.raises(TokenExpired):
            await auth.optional(_request(header))

    asyncio.run(body())
