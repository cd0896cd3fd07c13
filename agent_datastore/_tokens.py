"""Tokens that bind a remote proxy to one user's agent.

A token is a JSON Web Token (RFC 7519) signed with HMAC-SHA256, made and checked by PyJWT:
a standard construction from a well-kept library, no cryptography of our own. Its claims are
the issuer ``agent-datastore``, the user (``sub``), the agent (``agt``), when it was issued
(``iat``), when it expires (``exp``) and a random identifier (``jti``). The namespace is not
in the token: an agent picks its namespaces per call, as with the in-process proxy.

Only the runtime and the store service know the secret. The service takes the user and the
agent from a token it has verified, never from a request; a sandbox that holds a token can
read it, but cannot change it without the signature failing.
"""

from __future__ import annotations

import math
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
_REQUIRED_CLAIMS = ["iss", "sub", "agt", "iat", "exp"]


@dataclass(frozen=True, slots=True)
class TokenScope:
    """What a verified token grants: one user's agent, until ``expires_at`` (seconds since
    the epoch)."""

    user_id: str
    agent_name: str
    expires_at: float


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
) -> str:
    """A signed token that lets a ``RemoteDataStoreProxy`` use the data of ``user_id``'s
    agent ``agent_name`` (every namespace of it) for ``ttl`` (seconds or a ``timedelta``,
    one hour by default, at most seven days, rounded up to whole seconds).

    ``secret`` is the store service's secret: at least 32 bytes, known only to the runtime
    and the service. User and agent are checked as a proxy checks them.
    """
    key = _secret_bytes(secret)
    scope = _core.Scope.of(user_id, agent_name, "default")
    lifetime = _token_seconds(ttl)
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
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def _scope_of(claims: dict[str, Any]) -> tuple[str, str]:
    user_id, agent_name = claims.get("sub"), claims.get("agt")
    try:
        scope = _core.Scope.of(user_id, agent_name, "default")
    except (TypeError, ValueError) as exc:
        raise TokenRejected(f"the token names no valid user and agent ({exc})") from None
    return scope.user_id, scope.agent_name


def verify_token(secret: str | bytes, token: str) -> TokenScope:
    """The scope of a token this service issued and that has not expired; ``TokenRejected``
    for anything else. The message says which check failed, never the secret."""
    import jwt

    key = _secret_bytes(secret)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],  # only ours: no "none", no public-key confusion
            issuer=ISSUER,
            leeway=CLOCK_LEEWAY_SECONDS,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("the token has expired: ask the runtime for a new one") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("the token's signature does not match") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("the token was issued in the future (check the clocks)") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(f"the token is not valid ({exc})") from None
    user_id, agent_name = _scope_of(claims)
    return TokenScope(user_id, agent_name, float(claims["exp"]))


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
