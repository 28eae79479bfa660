"""Identity tokens: ES256 JWTs minted and verified the way SpacetimeDB 1.12 does (``client-api.md`` §2, §7).

Everything here is pure computation over keys, strings and a clock — no HTTP, no aiohttp — so the
gateway's routes, the WebSocket handshake and the control plane (which allocates identities for new
databases) share one implementation.

* :class:`SigningKeys` — the server's P-256 key pair, loaded from / created in a key directory
  (``id_ecdsa`` PKCS#8 private PEM + ``id_ecdsa.pub`` SPKI public PEM, §7.5).
* :class:`TokenAuthority` — mints tokens (:meth:`~TokenAuthority.new_identity`,
  :meth:`~TokenAuthority.mint_token`, :meth:`~TokenAuthority.websocket_token`) and verifies them
  (:meth:`~TokenAuthority.verify`, §7.4 steps 1, 2 and 4). Tokens from other issuers are checked
  against an optional :class:`IssuerKeySource` (the OIDC discovery of §7.4 step 3 plugs in there);
  without one they are rejected.
* :func:`parse_authorization` — the credentials extraction of §2.
* :class:`AuthError` and subclasses — every failure, carrying the HTTP status to answer with.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sats.errors import DecodeError
from sats.identity import Identity

__all__ = [
    "LOCAL_ISSUER",
    "DEFAULT_AUDIENCE",
    "WEBSOCKET_TOKEN_TTL",
    "EXP_LEEWAY",
    "MAX_CLAIM_BYTES",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "AuthError",
    "MalformedCredentials",
    "CredentialsRequired",
    "InvalidToken",
    "MalformedToken",
    "BadSignature",
    "TokenExpired",
    "InvalidClaims",
    "UntrustedIssuer",
    "KeyFileError",
    "Claims",
    "IssuedToken",
    "SigningKeys",
    "IssuerKeySource",
    "TokenAuthority",
    "parse_authorization",
    "token_payload",
    "decode_unverified",
]

#: ``iss`` of every token this server mints (standalone's ``LOCALHOST``).
LOCAL_ISSUER = "localhost"
#: ``aud`` of freshly minted identities.
DEFAULT_AUDIENCE: tuple[str, ...] = ("spacetimedb",)
#: Lifetime of ``POST /v1/identity/websocket-token`` tokens, seconds.
WEBSOCKET_TOKEN_TTL = 60
#: Leeway when checking an integer ``exp`` (the jsonwebtoken default 1.12 validates with).
EXP_LEEWAY = 60
#: ``iss`` and ``sub`` may each be at most this many UTF-8 bytes (§7.4 step 4).
MAX_CLAIM_BYTES = 128
PRIVATE_KEY_FILE = "id_ecdsa"
PUBLIC_KEY_FILE = "id_ecdsa.pub"

# Fixed bytes so the header's field order is exactly 1.12's (PyJWT would sort it to alg, typ).
_HEADER_B64 = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"ES256"}').rstrip(b"=").decode("ascii")
_REGISTERED = frozenset({"hex_identity", "sub", "iss", "aud", "iat", "exp"})
# The CLI decodes payloads with the *standard* base64 alphabet (§7.6). Plain-ASCII JSON only
# produces the sextets 62/63 ('-'/'_' in base64url, '+'/'/' in standard) from these four
# characters, so escaping them inside JSON strings makes both alphabets spell the same text.
_B64_UNSAFE = str.maketrans({">": "\\u003e", "?": "\\u003f", "~": "\\u007e", "\x7f": "\\u007f"})


# ----------------------------------------------------------------------------- errors


class AuthError(Exception):
    """A credentials problem; ``status`` is the HTTP status the gateway answers with."""

    status: int = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedCredentials(AuthError):
    """An ``Authorization`` header that is not ``Bearer <token>`` (§2.2)."""

    status = 400


class CredentialsRequired(AuthError):
    """A route that needs a token got none (§2.4)."""

    status = 401


class InvalidToken(AuthError):
    """A token was supplied but does not validate (§2.3): the base of every 401 below."""

    status = 401


class MalformedToken(InvalidToken):
    """Not a JWT: wrong number of segments, bad base64, payload not a JSON object."""


class BadSignature(InvalidToken):
    """The signature does not verify (forged, or signed by a key we do not hold)."""


class TokenExpired(InvalidToken):
    """An integer ``exp`` more than :data:`EXP_LEEWAY` seconds in the past."""


class InvalidClaims(InvalidToken):
    """Signature fine, but a required claim is missing, mistyped or inconsistent (§7.4 step 4)."""


class UntrustedIssuer(InvalidToken):
    """Not signed by us, and no key source vouches for the token's issuer."""


class KeyFileError(Exception):
    """The key directory cannot be used (startup error, not a request error)."""


# ----------------------------------------------------------------------------- claims


@dataclass(frozen=True, slots=True)
class Claims:
    """The validated content of a token (1.12's ``SpacetimeIdentityClaims``).

    ``audience`` is normalised to a tuple (``aud`` may be a string, an array or absent on the
    wire); ``extra`` holds every other claim, in token order, and is carried into websocket tokens.
    """

    identity: Identity
    subject: str
    issuer: str
    audience: tuple[str, ...]
    issued_at: int
    expires_at: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def for_subject(
        cls,
        issuer: str,
        subject: str,
        *,
        issued_at: int,
        audience: Sequence[str] = DEFAULT_AUDIENCE,
        expires_at: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Claims:
        """Claims with the identity derived from ``(issuer, subject)`` (§7.2)."""
        _check_iss_sub(issuer, subject)
        return cls(
            identity=Identity.from_claims(issuer, subject),
            subject=subject,
            issuer=issuer,
            audience=tuple(audience),
            issued_at=issued_at,
            expires_at=expires_at,
            extra=dict(extra or {}),
        )

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload object, in 1.12's field order (``exp`` present even when null)."""
        payload: dict[str, Any] = {
            "hex_identity": self.identity.to_hex(),
            "sub": self.subject,
            "iss": self.issuer,
            "aud": list(self.audience),
            "iat": self.issued_at,
            "exp": self.expires_at,
        }
        for name, value in self.extra.items():
            if name not in _REGISTERED:
                payload[name] = value
        return payload


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed token and the claims it carries."""

    token: str
    claims: Claims

    @property
    def identity(self) -> Identity:
        """The identity the token stands for."""
        return self.claims.identity


def _check_iss_sub(issuer: Any, subject: Any) -> None:
    for name, value in (("iss", issuer), ("sub", subject)):
        if not isinstance(value, str):
            raise InvalidClaims(f"invalid token: claim {name!r} must be a string")
        if not value:
            raise InvalidClaims(f"invalid token: claim {name!r} is empty")
        if len(value.encode("utf-8")) > MAX_CLAIM_BYTES:
            raise InvalidClaims(
                f"invalid token: claim {name!r} is longer than {MAX_CLAIM_BYTES} bytes: {value[:40]!r}…"
            )


def _claims_from_payload(payload: Mapping[str, Any]) -> Claims:
    """§7.4 step 4 plus the required-claim and type checks of step 1 (``exp`` is checked by the caller)."""
    for name in ("sub", "iss", "iat"):
        if name not in payload:
            raise InvalidClaims(f"invalid token: missing required claim {name!r}")
    issuer, subject = payload["iss"], payload["sub"]
    _check_iss_sub(issuer, subject)
    iat = payload["iat"]
    if not isinstance(iat, int) or isinstance(iat, bool) or iat < 0:
        raise InvalidClaims("invalid token: claim 'iat' must be a non-negative integer (seconds)")
    exp = payload.get("exp")
    if exp is not None and (not isinstance(exp, int) or isinstance(exp, bool)):
        raise InvalidClaims("invalid token: claim 'exp' must be an integer (seconds) or null")
    aud = payload.get("aud")
    if aud is None:
        audience: tuple[str, ...] = ()
    elif isinstance(aud, str):
        audience = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audience = tuple(aud)
    else:
        raise InvalidClaims("invalid token: claim 'aud' must be a string or an array of strings")
    identity = Identity.from_claims(issuer, subject)
    if "hex_identity" in payload:
        claimed = payload["hex_identity"]
        try:
            claimed_identity = Identity.from_hex(claimed)
        except DecodeError:
            raise InvalidClaims(f"invalid token: 'hex_identity' is not an identity: {claimed!r}") from None
        if claimed_identity != identity:
            raise InvalidClaims(
                f"invalid token: 'hex_identity' {claimed_identity.to_hex()} does not match the identity "
                f"{identity.to_hex()} derived from 'iss' and 'sub'"
            )
    extra = {k: v for k, v in payload.items() if k not in _REGISTERED}
    return Claims(identity, subject, issuer, audience, iat, exp, extra)


# ----------------------------------------------------------------------------- token text


def _b64url_decode(segment: str) -> bytes:
    if not segment.isascii():
        raise MalformedToken("invalid token: not a JWT (non-ASCII characters)")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, TypeError):
        raise MalformedToken("invalid token: not a JWT (bad base64url)") from None


def token_payload(token: str) -> str:
    """The payload JSON text of a compact JWT, unverified (what a module's ``get_jwt`` sees)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("invalid token: not a JWT (expected three dot-separated segments)")
    try:
        return _b64url_decode(parts[1]).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedToken("invalid token: payload is not UTF-8") from None


def decode_unverified(token: str) -> dict[str, Any]:
    """The payload of a compact JWT as a dict, **without** checking the signature."""
    try:
        payload = json.loads(token_payload(token))
    except json.JSONDecodeError:
        raise MalformedToken("invalid token: payload is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedToken("invalid token: payload is not a JSON object")
    return payload


def _payload_json(payload: Mapping[str, Any]) -> bytes:
    """Compact, ASCII-only JSON whose base64url equals its unpadded standard base64 (§7.6)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    # '>', '?', '~' and DEL can only occur inside JSON strings, where \\u escapes are equivalent.
    return text.translate(_B64_UNSAFE).encode("ascii")


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class SigningKeys:
    """The server's ES256 key pair; ``public_pem`` is what ``/v1/identity/public-key`` serves."""

    private_key: ec.EllipticCurvePrivateKey
    public_key: ec.EllipticCurvePublicKey
    public_pem: str

    @classmethod
    def generate(cls) -> SigningKeys:
        """A fresh P-256 key pair (not written anywhere)."""
        private = ec.generate_private_key(ec.SECP256R1())
        public = private.public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(private, public, pem.decode("ascii"))

    @classmethod
    def load(cls, key_dir: str | os.PathLike[str]) -> SigningKeys:
        """Load ``id_ecdsa`` and ``id_ecdsa.pub`` from ``key_dir``; both must exist and match."""
        d = Path(key_dir)
        priv_path, pub_path = d / PRIVATE_KEY_FILE, d / PUBLIC_KEY_FILE
        try:
            priv_pem = priv_path.read_bytes()
            pub_pem = pub_path.read_bytes()
        except OSError as e:
            raise KeyFileError(f"cannot read the JWT key pair in {d}: {e}") from e
        try:
            private = serialization.load_pem_private_key(priv_pem, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"{priv_path} is not an unencrypted PEM private key: {e}") from e
        try:
            public = serialization.load_pem_public_key(pub_pem)
        except ValueError as e:
            raise KeyFileError(f"{pub_path} is not a PEM public key (SPKI): {e}") from e
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
            raise KeyFileError(f"{priv_path} must be an EC P-256 key (ES256)")
        if not isinstance(public, ec.EllipticCurvePublicKey) or private.public_key() != public:
            raise KeyFileError(f"{pub_path} is not the public half of {priv_path}")
        try:
            text = pub_pem.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFileError(f"{pub_path} is not ASCII PEM") from None
        return cls(private, public, text)

    @classmethod
    def load_or_create(cls, key_dir: str | os.PathLike[str]) -> SigningKeys:
        """Load the pair from ``key_dir``, or create and durably write one if neither file exists.

        Exactly one of the two files present is an error: silently replacing the other half would
        invalidate every token issued so far (§7.5).
        """
        d = Path(key_dir)
        have_priv, have_pub = (d / PRIVATE_KEY_FILE).exists(), (d / PUBLIC_KEY_FILE).exists()
        if have_priv and have_pub:
            return cls.load(d)
        if have_priv or have_pub:
            present, missing = (
                (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE) if have_priv else (PUBLIC_KEY_FILE, PRIVATE_KEY_FILE)
            )
            raise KeyFileError(
                f"{d / present} exists but {d / missing} does not; restore the missing file or remove "
                f"both to create a new key pair (which invalidates all tokens issued so far)"
            )
        keys = cls.generate()
        keys.write(d)
        return keys

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, key_dir: str | os.PathLike[str]) -> None:
        """Write both PEM files (private one mode 0600), fsyncing files and directory."""
        d = Path(key_dir)
        d.mkdir(parents=True, exist_ok=True)
        for name, data, mode in (
            (PRIVATE_KEY_FILE, self.private_pem(), 0o600),
            (PUBLIC_KEY_FILE, self.public_pem.encode("ascii"), 0o644),
        ):
            tmp = d / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, d / name)
        dir_fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ----------------------------------------------------------------------------- verification


class IssuerKeySource(Protocol):
    """Public keys for tokens from issuers other than this server (§7.4 step 3).

    The OIDC implementation fetches ``<iss>/.well-known/openid-configuration`` and its
    ``jwks_uri`` and caches per issuer; it plugs in here without changing
    :meth:`TokenAuthority.verify`'s callers.
    """

    async def keys_for(self, issuer: str, kid: str | None) -> Sequence[PublicKeyTypes]:
        """Keys that may have signed a token from ``issuer`` (only ``kid``'s if given).

        Raise :class:`UntrustedIssuer` (or another :class:`InvalidToken`) if the issuer is unknown
        or its keys cannot be fetched.
        """
        ...


def _algorithms_for(key: PublicKeyTypes) -> list[str]:
    # §7.4: the algorithm family must match the key; we accept what 1.12 accepts for asymmetric keys.
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ["ES256"]
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256"]
    return []


class TokenAuthority:
    """Mints and verifies identity tokens with the server's key pair.

    ``clock`` returns Unix seconds (tests pass a fake); ``key_source`` vouches for external
    issuers (``None``: only tokens signed by this server are accepted).
    """

    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str = LOCAL_ISSUER,
        key_source: IssuerKeySource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.key_source = key_source
        self._clock = clock
        self._jws = jwt.PyJWS()

    @property
    def public_key_pem(self) -> str:
        """The SPKI PEM served at ``GET /v1/identity/public-key``."""
        return self.keys.public_pem

    def now(self) -> int:
        """Current Unix time in whole seconds, from the authority's clock."""
        return int(self._clock())

    # -- minting

    def mint_token(self, claims: Claims) -> str:
        """Sign ``claims`` as a compact ES256 JWT (header ``{"typ":"JWT","alg":"ES256"}``, §7.1)."""
        signing_input = f"{_HEADER_B64}.{_b64(_payload_json(claims.to_payload()))}"
        der = self.keys.private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def new_identity(self) -> IssuedToken:
        """A brand-new local identity: ``sub`` = random UUIDv4, ``iss`` = local issuer, no expiry (§7.3)."""
        claims = Claims.for_subject(self.issuer, str(uuid.uuid4()), issued_at=self.now())
        return IssuedToken(self.mint_token(claims), claims)

    def websocket_token(self, claims: Claims) -> IssuedToken:
        """Re-sign the caller's claims with our key, ``iat`` = now, ``exp`` = now + 60 s (§4).

        Issuer, subject, audience and extra claims are kept; the identity is recomputed.
        """
        now = self.now()
        fresh = replace(
            claims,
            identity=Identity.from_claims(claims.issuer, claims.subject),
            issued_at=now,
            expires_at=now + WEBSOCKET_TOKEN_TTL,
        )
        return IssuedToken(self.mint_token(fresh), fresh)

    # -- verification

    def verify_local(self, token: str) -> Claims:
        """Validate a token that must be signed by this server's key (§7.4 steps 1 and 4)."""
        payload = self._verified_payload(token, [self.keys.public_key])
        return self._check(payload, required_issuer=None)

    async def verify(self, token: str) -> Claims:
        """Validate any token (§7.4): our own key first, then the issuer's keys via ``key_source``.

        Raises :class:`InvalidToken` (401) subclasses. A token signed by us is accepted whatever
        its issuer (that is what makes websocket tokens for external identities work). A token
        claiming our issuer but failing our signature is rejected with that error (step 2).
        """
        try:
            return self.verify_local(token)
        except BadSignature as local_error:
            payload = decode_unverified(token)
            issuer = payload.get("iss")
            if not isinstance(issuer, str) or issuer == self.issuer:
                raise local_error from None
            if self.key_source is None:
                raise UntrustedIssuer(
                    f"invalid token: issuer {issuer[:80]!r} is not trusted; this server only accepts "
                    f"tokens it signed (external OIDC issuers are not supported)"
                ) from None
            kid = self._header(token).get("kid")
            keys = await self.key_source.keys_for(issuer, kid if isinstance(kid, str) else None)
            verified = self._verified_payload(token, list(keys))
            return self._check(verified, required_issuer=issuer)

    def _header(self, token: str) -> dict[str, Any]:
        try:
            return self._jws.get_unverified_header(token)
        except jwt.PyJWTError:
            raise MalformedToken("invalid token: bad JWT header") from None

    def _verified_payload(self, token: str, keys: Sequence[PublicKeyTypes]) -> dict[str, Any]:
        if not isinstance(token, str) or token.count(".") != 2:
            raise MalformedToken("invalid token: not a JWT (expected three dot-separated segments)")
        if not keys:
            raise UntrustedIssuer("invalid token: no keys available for the token's issuer")
        for key in keys:
            algorithms = _algorithms_for(key)
            if not algorithms:
                continue
            try:
                raw = self._jws.decode(token, key=key, algorithms=algorithms)  # type: ignore[arg-type]
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidAlgorithmError:
                continue
            except (jwt.DecodeError, InvalidSignature, ValueError) as e:
                raise MalformedToken(f"invalid token: {e}") from None
            try:
                payload = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise MalformedToken("invalid token: payload is not JSON") from None
            if not isinstance(payload, dict):
                raise MalformedToken("invalid token: payload is not a JSON object")
            return payload
        raise BadSignature("invalid token: the signature does not verify with any trusted key")

    def _check(self, payload: Mapping[str, Any], *, required_issuer: str | None) -> Claims:
        claims = _claims_from_payload(payload)
        if required_issuer is not None and claims.issuer != required_issuer:
            raise InvalidClaims(f"invalid token: issuer must be {required_issuer!r}")
        if claims.expires_at is not None and claims.expires_at + EXP_LEEWAY < self._clock():
            raise TokenExpired(f"invalid token: expired at {claims.expires_at} (Unix seconds)")
        return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# ----------------------------------------------------------------------------- credentials


#: A credential: printable ASCII without spaces (one regex: a per-character check of a JWT was 4 %
#: of the gateway's time per HTTP call).
_TOKEN = re.compile(r"[!-~]+")


def parse_authorization(header_value: str | None, query_token: str | None) -> str | None:
    """The token a request carries (§2), or ``None`` if it carries none.

    ``Authorization: Bearer <jwt>`` wins over ``?token=<jwt>``. A header that is present but not a
    well-formed Bearer credential raises :class:`MalformedCredentials` (400).
    """
    if header_value is None:
        return query_token
    scheme, sep, rest = header_value.partition(" ")
    token = rest.strip(" \t")
    if not sep or scheme.lower() != "bearer" or _TOKEN.fullmatch(token) is None:
        raise MalformedCredentials("Authorization is invalid: malformed token")
    return token
