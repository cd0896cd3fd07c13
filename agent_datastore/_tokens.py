"""Tokens that bind a remote proxy to one user's agent.

A token is a JSON Web Token (RFC 7519) signed with HMAC-SHA256, made and checked by PyJWT:
a standard construction from a well-kept library, no cryptography of our own. Its claims are
the issuer ``agent-datastore``, the user (``sub``), the agent (``agt``), when it was issued
(``iat``), when it expires (``exp``), a random identifier (``jti``: the rate limiter counts
per token id) and, when the runtime names one, the audience (``aud``: the service it is for).
The namespace is not in the token: an agent picks its namespaces per call, as with the
in-process proxy.

Only the runtime and the store service know the secret. The service takes the user and the
agent from a token it has verified, never from a request; a sandbox that holds a token can
read it, but cannot change it without the signature failing.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import _core
from ._exceptions import TokenRejected

__all__ = ["TokenScope", "issue_token", "read_token", "verify_token"]

ISSUER = "agent-datastore"
ALGORITHM = "HS256"
# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash, 256 bits.
MIN_SECRET_BYTES = 32
DEFAULT_TOKEN_TTL = timedelta(hours=1)
MAX_TOKEN_TTL = timedelta(days=7)
# Clocks of the runtime and the service may disagree by this much.
CLOCK_LEEWAY_SECONDS = 10
_MAX_TOKEN_SECONDS = int(MAX_TOKEN_TTL.total_seconds())
_REQUIRED_CLAIMS = ["iss", "sub", "agt", "iat", "exp", "jti"]
# issue_token's ids are 16 characters; the limit only bounds what a rate limiter keeps
MAX_TOKEN_ID_CHARS = 64
# JWS compact serialization as jwt.encode writes it: three base64url segments, no padding
_COMPACT_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Verified tokens remembered: more than most services see within a token's lifetime. Only
# tokens signed with the secret enter, so a client cannot fill it with junk; at a few hundred
# bytes per token from issue_token, it holds a few MiB.
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TokenScope:
    """What a verified token grants: one user's agent, until ``expires_at`` (seconds since
    the epoch). ``token_id`` (the ``jti`` claim) tells this token from every other, however
    it is spelled."""

    user_id: str
    agent_name: str
    expires_at: float
    token_id: str


def _secret_bytes(secret: object) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise TypeError(f"secret must be str or bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"secret must be at least {MIN_SECRET_BYTES} bytes (256 bits), not {len(secret)}; "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return secret


def _token_seconds(ttl: object) -> int:
    checked = _core.check_ttl(ttl)
    assert checked is not None
    if checked > MAX_TOKEN_TTL:
        raise ValueError(f"a token lives at most {MAX_TOKEN_TTL.days} days, not {ttl!r}")
    return math.ceil(checked.total_seconds())


def issue_token(
    secret: str | bytes,
    user_id: str,
    agent_name: str,
    *,
    ttl: float | timedelta = DEFAULT_TOKEN_TTL,
    audience: str | None = None,
) -> str:
    """A signed token that lets a ``RemoteDataStoreProxy`` use the data of ``user_id``'s
    agent ``agent_name`` (every namespace of it) for ``ttl`` (seconds or a ``timedelta``,
    one hour by default, at most seven days, rounded up to whole seconds).

    ``secret`` is the store service's secret: at least 32 bytes, known only to the runtime
    and the service. User and agent are checked as a proxy checks them. ``audience`` (a
    non-empty string) names the service the token is for: only a service started with that
    audience accepts it, and a service started with an audience accepts no token without.
    """
    key = _secret_bytes(secret)
    scope = _core.Scope.of(user_id, agent_name, "default")
    lifetime = _token_seconds(ttl)
    checked_audience = _check_audience(audience)
    import jwt  # PyJWT: imported here so that importing agent_datastore stays light

    issued = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": scope.user_id,
        "agt": scope.agent_name,
        "iat": issued,
        "exp": issued + lifetime,
        # two tokens issued in the same second are still two tokens, each with its own rate
        # limit (and told apart in logs)
        "jti": secrets.token_urlsafe(12),
    }
    if checked_audience is not None:
        claims["aud"] = checked_audience
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def _scope_of(claims: dict[str, Any]) -> tuple[str, str]:
    user_id, agent_name = claims.get("sub"), claims.get("agt")
    try:
        scope = _core.Scope.of(user_id, agent_name, "default")
    except (TypeError, ValueError) as exc:
        raise TokenRejected(f"the token names no valid user and agent ({exc})") from None
    return scope.user_id, scope.agent_name


def _check_canonical(token: str) -> None:
    """Refuse every spelling of a token but the one ``jwt.encode`` writes, so that one token
    is one string (a cache keyed on the text, a log line, a client's view all agree).

    Header and payload need only the alphabet: they are signed as written, so any other
    spelling of them fails the signature. The signature is not signed: its last character
    carries bits that decoding drops, and only the spelling whose dropped bits are zero is
    canonical. PyJWT from 2.14 refuses the rest; this check does not depend on its version.
    """
    if _COMPACT_TOKEN.fullmatch(token) is None:
        raise TokenRejected(
            "the token is not three base64url segments (A-Z a-z 0-9 - _, no '=' padding)"
        )
    signature = token.rpartition(".")[2]
    try:
        data = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except binascii.Error:  # a length that no bytes encode to
        raise TokenRejected("the token's signature is not base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != signature:
        raise TokenRejected("the token's signature is not spelled canonically")


def _integer_claim(claims: dict[str, Any], name: str) -> int:
    value = claims[name]
    # issue_token writes whole seconds; a string, a bool or a float is not one of ours
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenRejected(
            f"the token's {name!r} claim must be an integer (seconds since the epoch), "
            f"not {type(value).__name__}"
        )
    return value


@dataclass(frozen=True, slots=True)
class _Verified:
    """What holds of a token at any time (signature, claims, audience): ``_verified`` caches
    it. Whether the token is valid now is checked on every call, from the times kept here."""

    scope: TokenScope
    issued_at: int
    not_before: int | None
    expires_at: int


def _checked_claims(claims: dict[str, Any], audience: str | None) -> _Verified:
    """Every rule issue_token follows, checked on claims whose signature is good."""
    for name in _REQUIRED_CLAIMS:
        if name not in claims:
            raise TokenRejected(f"the token has no {name!r} claim")
    if claims["iss"] != ISSUER:
        raise TokenRejected(f"the token's issuer is not {ISSUER!r}")
    issued_at = _integer_claim(claims, "iat")
    expires_at = _integer_claim(claims, "exp")
    not_before = _integer_claim(claims, "nbf") if "nbf" in claims else None
    if issued_at < 0:
        raise TokenRejected("the token's 'iat' claim is negative")
    if expires_at <= issued_at:
        raise TokenRejected("the token expires before it was issued ('exp' <= 'iat')")
    if expires_at - issued_at > _MAX_TOKEN_SECONDS:
        raise TokenRejected(
            f"the token lives {expires_at - issued_at} s, over the limit of "
            f"{MAX_TOKEN_TTL.days} days ('exp' - 'iat')"
        )
    token_id = claims["jti"]
    if not isinstance(token_id, str) or not 0 < len(token_id) <= MAX_TOKEN_ID_CHARS:
        raise TokenRejected(
            f"the token's 'jti' claim must be a non-empty string of at most "
            f"{MAX_TOKEN_ID_CHARS} characters"
        )
    if audience is None:
        if "aud" in claims:
            raise TokenRejected(
                "the token names an audience, and this service accepts only tokens without one"
            )
    elif "aud" not in claims:
        raise TokenRejected("the token names no audience, and this service has one")
    elif claims["aud"] != audience:
        raise TokenRejected("the token is for another audience")
    user_id, agent_name = _scope_of(claims)
    scope = TokenScope(user_id, agent_name, float(expires_at), token_id)
    return _Verified(scope, issued_at, not_before, expires_at)


@functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)
def _verified(key: bytes, audience: str | None, token: str) -> _Verified:
    """The signature and claim checks of ``token``, which do not change with time: cached
    by the exact text, secret and audience. A refusal raises, and is never cached, so that
    the cache holds only tokens signed with the secret and can only save work."""
    import jwt  # PyJWT: imported here so that importing agent_datastore stays light

    _check_canonical(token)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],  # only ours: no "none", no public-key confusion
            # the claims are checked below, all in one place and more strictly than PyJWT
            # does (it takes "123" for a time, and any lifetime)
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenRejected("the token's signature does not match") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(f"the token is not valid ({exc})") from None
    return _checked_claims(claims, audience)


def _check_audience(audience: object) -> str | None:
    return None if audience is None else _core.check_name(audience, "audience")


def verify_token(secret: str | bytes, token: str, *, audience: str | None = None) -> TokenScope:
    """The scope of a token this service issued and that is valid now; ``TokenRejected`` for
    anything else. The message says which check failed, never the secret.

    The token must be spelled as ``issue_token`` spells it, signed with HS256 and ``secret``,
    and carry every claim ``issue_token`` writes, of its type: times as integers, issued
    neither before the epoch nor in the future, expiring after it was issued and at most
    seven days later (clocks may differ by ``CLOCK_LEEWAY_SECONDS``), with a token id.
    With ``audience``, the token must name that audience; without, it must name none.
    """
    key = _secret_bytes(secret)
    expected_audience = _check_audience(audience)
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    verified = _verified(key, expected_audience, token)
    now = time.time()
    if verified.expires_at <= now - CLOCK_LEEWAY_SECONDS:
        raise TokenRejected("the token has expired: ask the runtime for a new one")
    if verified.issued_at > now + CLOCK_LEEWAY_SECONDS:
        raise TokenRejected("the token was issued in the future (check the clocks)")
    if verified.not_before is not None and verified.not_before > now + CLOCK_LEEWAY_SECONDS:
        raise TokenRejected("the token is not valid yet ('nbf' is in the future)")
    return verified.scope


def read_token(token: object) -> tuple[str, str]:
    """The user and agent a token names, read without checking its signature: what a client,
    which has no secret, can know of its own token. Only the service's check counts."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise ValueError(f"token is not an agent-datastore token ({exc})") from None
    try:
        return _scope_of(claims)
    except TokenRejected as exc:
        raise ValueError(exc.detail) from None
