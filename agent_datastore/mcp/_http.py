"""The MCP server over streamable HTTP: every request carries a bearer token that
``verify_token`` checks as the store service does, and is served by a proxy for that token's
user and agent, within the limits the store service applies to its callers (connections,
request time, body size, bytes in flight, rate)."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _connections, _serving
from .._async import AsyncDataStore, connect_async
from .._exceptions import (
    HTTPException,
    TokenRejected,
)
from .._remote import AsyncRemoteDataStoreProxy
from .._tokens import _check_audience, _secret_bytes, verify_token
from ._server import Context, create_server
from ._tools import Proxy

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "TokenVerifier",
    "create_http_app",
    "serve_http",
    "service_client",
]

logger = logging.getLogger("agent_datastore.mcp")

# The largest body a request may have over HTTP. A set of the largest value the store takes
# (16 MiB of BSON) needs about as many bytes of JSON, more where JSON spells a value longer
# than BSON does (escaped control characters, long numbers): twice that leaves room for both.
# It is also serve's default, so that with --url a set the MCP server accepts is one the
# service accepts too. A set_many of 1,000 large values must be sent in several calls.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# The files the process keeps for reaching a store service with --url: httpx's default pool.
_SERVICE_POOL_SIZE = 100


class TokenVerifier:
    """The SDK's token verifier over ``verify_token``: a token the store service would accept
    becomes an ``AccessToken`` naming its user and agent; any other, ``None`` (401)."""

    def __init__(self, secret: str | bytes, audience: str | None = None) -> None:
        self._secret = _secret_bytes(secret)
        self._audience = _check_audience(audience)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            scope = verify_token(self._secret, token, audience=self._audience)
        except (TokenRejected, TypeError, ValueError):
            return None
        return AccessToken(
            token=token,
            # the principal a session is bound to: the user and the agent, unambiguously
            client_id=json.dumps([scope.user_id, scope.agent_name]),
            scopes=[],
            subject=scope.user_id,
            # jti: what the rate limit counts, one id however the token's text is spelled; exp
            # for the limiter only, not as expires_at, which the SDK would check again without
            # verify_token's leeway for clock skew
            claims={"agt": scope.agent_name, "jti": scope.token_id, "exp": scope.expires_at},
        )


def _caller(ctx: Context) -> AccessToken:
    request = ctx.request
    user = request.scope.get("user") if request is not None else None
    if not isinstance(user, AuthenticatedUser):  # the bearer middleware let no such request in
        raise TokenRejected("the request has no verified bearer token")
    return user.access_token


def _refusal(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    """An HTTP error answer as the SDK gives its own: a JSON-RPC error with no id, which its
    client passes on to the caller as the request's error."""
    from starlette.responses import Response

    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": types.INVALID_REQUEST, "message": message},
    }
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


class _CallerLimits:
    """ASGI middleware between the SDK's bearer authentication and the MCP endpoint (the
    application's only route), for requests whose token was verified (any other goes on to
    the endpoint's 401, its body unread): a method other than POST is answered 405, since a
    stateless server has no stream to open and no session to end; a token over ``limiter``'s
    rate 429 with ``Retry-After``; a body over ``max_body_bytes`` 413, by its Content-Length
    before any of it is read, else as soon as the bytes received pass it.

    The body, and what parsing it will hold, is counted against ``budget`` as it arrives, as
    the store service counts it (``_serving.BodyCost``), and given back once the answer has
    been sent: past the budget a request waits briefly, then is answered 503 with
    ``Retry-After``; one that alone would need more than all of it, 413. Only a body received
    whole and within the limits reaches the endpoint, as the chunks that arrived."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        limiter: _serving.RateLimiter | None,
        budget: _serving.InflightBudget,
    ) -> None:
        self._app = app
        self._max_body_bytes = max_body_bytes
        self._limiter = limiter
        self._budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user") if scope["type"] == "http" else None
        if not isinstance(user, AuthenticatedUser):
            await self._app(scope, receive, send)
            return
        if scope["method"] != "POST":
            # the SDK would hold a GET open as an event stream for as long as the client
            # likes, sending nothing: a stateless server has nothing to send on it
            refusal = _refusal(
                405, "only POST is served: the server is stateless", {"Allow": "POST"}
            )
            await refusal(scope, receive, send)
            return
        token = user.access_token
        if self._limiter is not None:
            claims = token.claims or {}
            wait = self._limiter.wait_needed(str(claims["jti"]), float(claims["exp"]))
            if wait:
                retry_after = {"Retry-After": _serving.retry_after(wait)}
                refusal = _refusal(429, "too many requests for this token", retry_after)
                await refusal(scope, receive, send)
                return
        hold = _serving.Hold(self._budget)
        hold.tenant = token.client_id  # the user and the agent
        try:
            body = await self._whole_body(scope, receive, hold)
        except HTTPException as exc:
            hold.release()
            refusal = _refusal(exc.status_code, exc.detail, dict(exc.headers or {}))
            await refusal(scope, receive, send)
            return
        if body is None:  # nobody is left to answer
            hold.release()
            logger.info("the client left before its request was whole")
            return

        messages = body

        async def replay() -> Message:
            return messages.popleft() if messages else await receive()

        try:
            await self._app(scope, replay, send)
        finally:
            hold.release()

    async def _whole_body(
        self, scope: Scope, receive: Receive, hold: _serving.Hold
    ) -> deque[Message] | None:
        """The request's messages up to the end of its body, or ``None`` if the client left
        (or the request deadline closed its connection) before then. The body is counted in
        ``hold``: its declared length at once (so that a request that cannot fit waits before
        any of it is read), else chunk by chunk, then what parsing it will hold.
        ``HTTPException``: 413 as soon as the body is known to be over the limit or over the
        whole budget, 503 when the budget has no room for it in time."""
        too_large = HTTPException(413, f"the request body is over {self._max_body_bytes} bytes")
        declared = next(
            (value for name, value in scope["headers"] if name == b"content-length"), b""
        )
        length = int(declared) if declared.isdigit() else None
        if length is not None:
            if length > self._max_body_bytes:
                raise too_large
            await hold.take(length)
        messages: deque[Message] = deque()
        counted = _serving.BodyCost()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            counted.add(chunk)
            if counted.size > self._max_body_bytes:
                raise too_large
            if counted.total > self._budget.limit:
                raise self._budget.over_budget(counted.total)  # before the rest is read
            if length is None or counted.size > length:
                await hold.take(len(chunk))
            if not message.get("more_body", False):
                await hold.take(counted.total - hold.held)  # what parsing it will hold
                return messages


def create_http_app(
    secret: str | bytes,
    *,
    uri: str | None = None,
    url: str | None = None,
    audience: str | None = None,
    host: str = "127.0.0.1",
    path: str = "/mcp",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit: tuple[int, float] | None = None,
    max_inflight_bytes: int = _serving.DEFAULT_MAX_INFLIGHT_BYTES,
) -> Starlette:
    """An ASGI application serving the tools over streamable HTTP at ``path``: each request
    must bear a token from ``issue_token`` signed with ``secret`` (and for ``audience``, if
    given), and acts for that token's user and agent only.

    Give ``uri`` (the database, opened when the application starts and closed when it stops)
    or ``url`` (a store service, to which each caller's token is passed on). ``host`` is
    where it will listen: on a loopback address, requests naming another host or coming from
    another origin are refused (DNS rebinding).

    A request body over ``max_body_bytes`` is answered 413 before it is read whole, and runs
    nothing. ``rate_limit=(requests, per_seconds)`` allows each token that many requests per
    period (the whole number at once, then at the average rate), as the store service does,
    and answers 429 with ``Retry-After`` beyond it. The bodies of requests in flight, with
    what parsing them holds, take at most about ``max_inflight_bytes`` at once (a quarter of
    it for one user's agent with requests in parallel): a request past it waits briefly, then
    is answered 503 with ``Retry-After``. Only POST is served (405 otherwise): the
    server is stateless, with no event stream to hold open."""
    if (uri is None) == (url is None):
        raise ValueError("give either uri (a database) or url (a store service)")
    for name, limit in (
        ("max_body_bytes", max_body_bytes),
        ("max_inflight_bytes", max_inflight_bytes),
    ):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{name} must be a positive integer, not {limit!r}")
    limiter = None if rate_limit is None else _serving.RateLimiter(*rate_limit)
    verifier = TokenVerifier(secret, audience)
    opened: dict[str, Any] = {}

    def proxy_for(ctx: Context) -> Proxy:
        token = _caller(ctx)
        if url is not None:
            return AsyncRemoteDataStoreProxy(url, token.token, http_client=opened["client"])
        user_id, agent_name = json.loads(token.client_id)
        store: AsyncDataStore = opened["store"]
        return store.proxy(user_id, agent_name)

    server = create_server(proxy_for)
    app = server.streamable_http_app(
        streamable_http_path=path,
        # every request stands alone, authorized by its own token: no session to hijack
        stateless_http=True,
        json_response=True,
        host=host,
        # the SDK wants an issuer; it is only published with an authorization server of the
        # SDK's own, and tokens here come from issue_token
        auth=AuthSettings(issuer_url=AnyHttpUrl("http://127.0.0.1"), resource_server_url=None),
        token_verifier=verifier,
        # the limit is _CallerLimits's, which has checked the body by the time the SDK reads it
        max_request_body_size=max_body_bytes,
    )
    budget = _serving.InflightBudget(max_inflight_bytes)
    app.state.inflight_budget = budget  # for tests: what requests hold now
    # last, so innermost: after the SDK's authentication has put the verified token in the
    # scope, before the endpoint reads the body
    app.user_middleware.append(
        Middleware(
            _CallerLimits,
            max_body_bytes=max_body_bytes,
            limiter=limiter,
            budget=budget,
        )
    )
    served = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[None]:
        if url is not None:
            opened["client"] = service_client()
        else:
            opened["store"] = connect_async(uri)
        try:
            async with served(application):
                yield
        finally:
            with anyio.CancelScope(shield=True):
                if url is not None:
                    await opened.pop("client").aclose()
                else:
                    await opened.pop("store").aclose()

    app.router.lifespan_context = lifespan
    return app


def service_client(transport: Any = None) -> Any:
    """The one HTTP client that every caller's remote proxy shares (``--url``). It carries
    nothing of one caller into another's requests: each request has its caller's token, and
    the client keeps no cookies, which a gateway in front of the service may set (a shared
    jar would send one caller's session cookie with the next caller's token)."""
    import http.cookiejar

    import httpx

    no_cookies = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
    jar = http.cookiejar.CookieJar(policy=no_cookies)
    return httpx.AsyncClient(timeout=10.0, cookies=jar, transport=transport)


def serve_http(
    secret: str | bytes,
    *,
    uri: str | None = None,
    url: str | None = None,
    audience: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    request_timeout: float = _connections.DEFAULT_REQUEST_TIMEOUT,
    max_connections: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit: tuple[int, float] | None = None,
    max_inflight_bytes: int = _serving.DEFAULT_MAX_INFLIGHT_BYTES,
) -> None:
    """Run ``create_http_app`` with uvicorn until it is stopped (Ctrl-C or SIGTERM), with the
    store service's connection guards (``server.serve``): a connection whose request (headers
    and body) has not arrived whole ``request_timeout`` seconds after the connection was
    accepted, or after the request's first byte, is closed; at most ``max_connections`` are
    open at once, new ones beyond it closed at once; by default as many as the open-file limit
    allows (raised as far as needed, within the hard limit) after the files kept for the
    database's pool or the service's, at most 10,000."""
    import uvicorn

    _connections.check_options(request_timeout, max_connections)
    pool = _SERVICE_POOL_SIZE if uri is None else _connections.database_pool_size(uri)
    app = create_http_app(
        secret,
        uri=uri,
        url=url,
        audience=audience,
        host=host,
        max_body_bytes=max_body_bytes,
        rate_limit=rate_limit,
        max_inflight_bytes=max_inflight_bytes,
    )
    config = _connections.guarded_config(
        app,
        request_timeout=request_timeout,
        max_connections=max_connections,
        reserved=_connections.OWN_FILES + pool,
        host=host,
        port=port,
        lifespan="on",
        log_level="info",
    )
    uvicorn.Server(config).run()
