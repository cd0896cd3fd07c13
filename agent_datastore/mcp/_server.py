"""The MCP server: the tools and resources over one async proxy per caller, on stdio or
streamable HTTP.

On stdio the server acts for one user's agent, fixed when it starts. Over HTTP every request
carries a bearer token that ``verify_token`` checks as the store service does (the SDK's
bearer middleware answers 401 to a missing or refused one), and the request is served by a
proxy for that token's user and agent: a local proxy over the store, or, with a store
service, a remote proxy holding the caller's own token, so that the service checks it again
and the MCP server can never reach more than the token grants.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import anyio
import mcp_types as types
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from mcp.server import Server
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared._context_streams import create_context_streams
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import AnyHttpUrl, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, _connections, _serving
from .._async import AsyncDataStore, connect_async
from .._exceptions import (
    DataStoreError,
    DataStoreUnavailable,
    HTTPException,
    TokenRejected,
    VersionConflict,
)
from .._remote import AsyncRemoteDataStoreProxy
from .._tokens import _check_audience, _secret_bytes, verify_token
from . import _resources
from ._tools import TOOLS, Proxy, TooDeepForMCP, Tool

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "TokenVerifier",
    "call_tool",
    "create_http_app",
    "create_server",
    "error_of",
    "run_stdio",
    "serve_http",
]

logger = logging.getLogger("agent_datastore.mcp")

Context = ServerRequestContext[Any, Any]
ProxyFor = Callable[[Context], Proxy]

INSTRUCTIONS = (
    "A persistent JSON key-value store of your own, kept between sessions: every key lives in "
    'a namespace ("default" unless you name one). Use set/get for single values, get_item '
    "for details (version, expiry), increment for counters, and list_keys to see what is "
    "there. Values are JSON; integers of up to 4,300 digits are kept exactly. A get_many "
    "that lists remaining keys was full: ask for those again."
)
UNAVAILABLE = "the store is unavailable; try again later"
# The largest body a request may have over HTTP. A set of the largest value the store takes
# (16 MiB of BSON) needs about as many bytes of JSON, more where JSON spells a value longer
# than BSON does (escaped control characters, long numbers): twice that leaves room for both.
# It is also serve's default, so that with --url a set the MCP server accepts is one the
# service accepts too. A set_many of 1,000 large values must be sent in several calls.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# The files the process keeps for reaching a store service with --url: httpx's default pool.
_SERVICE_POOL_SIZE = 100
_MAX_MESSAGE_CHARS = 500

_TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}
_VALIDATORS = {tool.name: Draft202012Validator(tool.input_schema) for tool in TOOLS}
# The arguments each tool's schema types "integer": JSON Schema counts 1.0 and 1e0 as integers
# (a number with no fraction), as does JSON itself, and some clients cannot send them
# otherwise (JavaScript has one number type); the proxy takes only Python ints.
_INTEGER_ARGUMENTS = {
    tool.name: [
        name
        for name, schema in tool.input_schema["properties"].items()
        if schema.get("type") == "integer"
    ]
    for tool in TOOLS
}
# Python's refusal of an integer past its int/str conversion limit names a setting of the
# interpreter, which is not the caller's to change; it is said in the caller's terms.
_INT_DIGITS_LIMIT = re.compile(
    r"Exceeds the limit \((\d+) digits\) for integer string conversion"
    r"(?:: value has \d+ digits)?; use sys\.set_int_max_str_digits\(\) to increase the limit"
)


def error_of(exc: Exception) -> tuple[str, str] | None:
    """The kind and message of a tool error for an exception a proxy raised, or ``None`` for
    one no proxy raises (a bug). The message is the proxy's own, except where it could carry
    the database's or the service's words or address: then it only says what happened."""
    if isinstance(exc, VersionConflict):
        return "version_conflict", exc.detail
    if isinstance(exc, TokenRejected):
        return "token_rejected", exc.detail
    if isinstance(exc, DataStoreUnavailable):
        return "unavailable", UNAVAILABLE
    if isinstance(exc, DataStoreError):
        return "refused", "the store refused the operation"
    if isinstance(exc, HTTPException):  # an answer of the store service, such as 413 or 429
        if exc.status_code == 429:
            return "unavailable", "too many requests for this token; try again later"
        if exc.status_code < 500:
            return "refused", exc.detail
        return "unavailable", UNAVAILABLE
    if isinstance(exc, TooDeepForMCP):
        return "too_deep", str(exc)
    if isinstance(exc, (TypeError, ValueError)):
        message = _INT_DIGITS_LIMIT.sub(r"an integer has more than \1 digits", str(exc))
        return "invalid_argument", message
    return None


def _shortened(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def _tool_error(kind: str, message: str) -> types.CallToolResult:
    message = _shortened(message)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)],
        structured_content={"error": kind, "message": message},
        is_error=True,
    )


def _schema_error(tool: Tool, arguments: dict[str, Any]) -> str | None:
    error = best_match(_VALIDATORS[tool.name].iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"invalid arguments{f' at {where}' if where else ''}: {error.message}"


def _with_whole_integers(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` with each integer argument the schema accepted as a whole-number float
    (1.0, 1e0) made the int it stands for; any other value is left for the proxy to judge."""
    converted = {
        name: int(arguments[name])
        for name in _INTEGER_ARGUMENTS[tool.name]
        if type(arguments.get(name)) is float
    }
    return {**arguments, **converted} if converted else arguments


async def call_tool(
    proxy: Proxy, name: str, arguments: dict[str, Any] | None
) -> types.CallToolResult:
    """Run the tool ``name`` on ``proxy``: its arguments checked by its input schema, then by
    the proxy; every error a tool error (``isError``) with the proxy's message."""
    tool = _TOOLS_BY_NAME.get(name)
    if tool is None:
        return _tool_error(
            "unknown_tool", f"no tool {name!r}; the tools are {list(_TOOLS_BY_NAME)}"
        )
    arguments = arguments if arguments is not None else {}
    refusal = _schema_error(tool, arguments)
    if refusal is not None:
        return _tool_error("invalid_argument", refusal)
    arguments = _with_whole_integers(tool, arguments)
    try:
        scoped = proxy.use_namespace(arguments.get("namespace", "default"))
        structured, text = await tool.run(scoped, arguments)
    except Exception as exc:
        failure = error_of(exc)
        if failure is None:
            logger.exception("the tool %s failed", name)
            failure = ("internal", "internal error")
        return _tool_error(*failure)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured
    )


def _tool_listing() -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[
            types.Tool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=tool.input_schema,
                output_schema=tool.output_schema,
                annotations=types.ToolAnnotations(
                    title=tool.title,
                    read_only_hint=tool.read_only,
                    destructive_hint=not tool.read_only,
                    # a set again writes a new version; deleting again changes nothing more
                    idempotent_hint=tool.read_only or tool.name in ("delete", "delete_many"),
                    open_world_hint=False,
                ),
            )
            for tool in TOOLS
        ]
    )


def create_server(proxy: Proxy | ProxyFor) -> Server[Any]:
    """A low-level MCP ``Server`` with the tools and resources, acting through ``proxy``: one
    proxy (stdio, tests), or a function of the request's context that returns the proxy of
    its caller (HTTP)."""
    proxy_for: ProxyFor = proxy if callable(proxy) else (lambda _: proxy)

    async def list_tools(ctx: Context, params: Any) -> types.ListToolsResult:
        return _tool_listing()

    async def on_call_tool(
        ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await call_tool(proxy_for(ctx), params.name, params.arguments)

    async def list_resources(ctx: Context, params: Any) -> types.ListResourcesResult:
        try:
            return await _resources.resources(proxy_for(ctx))
        except Exception as exc:
            raise _resource_error(exc) from None

    async def list_templates(ctx: Context, params: Any) -> types.ListResourceTemplatesResult:
        return _resources.templates()

    async def read_resource(
        ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            return await _resources.read(proxy_for(ctx), params.uri)
        except Exception as exc:
            raise _resource_error(exc) from None

    return Server(
        "agent-datastore",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


def _resource_error(exc: Exception) -> MCPError:
    if isinstance(exc, _resources.ResourceNotFound):
        return MCPError(types.INVALID_PARAMS, str(exc))
    failure = error_of(exc)
    if failure is None:
        logger.error("reading a resource failed", exc_info=exc)
        return MCPError(types.INTERNAL_ERROR, "internal error")
    kind, message = failure
    code = types.INVALID_PARAMS if kind == "invalid_argument" else types.INTERNAL_ERROR
    return MCPError(code, _shortened(message))


# After stdin closes, how long the requests already read may take to be answered.
STDIN_CLOSED_GRACE_SECONDS = 60.0


def _unreadable_line_error(exc: Exception) -> SessionMessage:
    """The JSON-RPC answer to a line the transport could not read as a message: -32700 for
    text that is not JSON (or that the SDK's parser refuses: a lone surrogate, nesting past
    its limit, a number of more than 4,300 digits), -32600 for JSON that is no JSON-RPC
    message; ``id`` null, since the request's own could not be read (JSON-RPC 2.0, 5.1)."""
    parser_errors = [
        error["msg"]  # the parser's words and the place, without the input
        for error in (exc.errors() if isinstance(exc, ValidationError) else [])
        if error["type"] == "json_invalid"
    ]
    if parser_errors:
        message = f"Parse error: {_shortened(parser_errors[0])}"
        error = types.ErrorData(code=types.PARSE_ERROR, message=message)
    else:
        error = types.ErrorData(
            code=types.INVALID_REQUEST, message="Invalid Request: not a JSON-RPC message"
        )
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=None, error=error))


class _AnswerCounter:
    """The write side of the server, counting the requests read and not yet answered, so that
    the server is stopped only once every request read before stdin closed has its answer
    (the SDK stops at end of input and cancels the handlers still running)."""

    def __init__(self, stream: WriteStream[SessionMessage]) -> None:
        self._stream = stream
        self.unanswered: Counter[types.RequestId] = Counter()
        self._changed = anyio.Event()

    def read(self, message: types.JSONRPCMessage) -> None:
        if isinstance(message, types.JSONRPCRequest):
            self.unanswered[message.id] += 1
        elif (
            isinstance(message, types.JSONRPCNotification)
            and message.method == "notifications/cancelled"
            and isinstance(message.params, dict)
        ):
            # a cancelled request gets no answer (the specification's "Cancellation")
            self._answered(message.params.get("requestId"))

    def _answered(self, request_id: Any) -> None:
        if self.unanswered.get(request_id, 0) > 0:
            self.unanswered[request_id] -= 1
            if not self.unanswered[request_id]:
                del self.unanswered[request_id]
            self._changed.set()

    async def all_answered(self) -> None:
        while self.unanswered:
            self._changed = anyio.Event()
            await self._changed.wait()

    async def send(self, item: SessionMessage, /) -> None:
        await self._stream.send(item)
        if isinstance(item.message, (types.JSONRPCResponse, types.JSONRPCError)):
            self._answered(item.message.id)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> _AnswerCounter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


async def serve_lines(
    server: Server[Any],
    read_stream: ReadStream[SessionMessage | Exception],
    write_stream: WriteStream[SessionMessage],
) -> None:
    """Run ``server`` on the streams of a line transport (``stdio_server``), answering what
    the SDK's server leaves unanswered: a line that is not a JSON-RPC message gets an error
    with id null instead of silence, and at end of input the requests already read are
    answered (for at most ``STDIN_CLOSED_GRACE_SECONDS``) before the server stops."""
    to_server, server_reads = create_context_streams[SessionMessage | Exception](0)
    answers = _AnswerCounter(write_stream)

    async def relay() -> None:
        async with to_server:
            async for item in read_stream:
                if isinstance(item, Exception):
                    await write_stream.send(_unreadable_line_error(item))
                    continue
                answers.read(item.message)
                await to_server.send(item)
            with anyio.move_on_after(STDIN_CLOSED_GRACE_SECONDS):
                await answers.all_answered()

    async with anyio.create_task_group() as group:
        group.start_soon(relay)
        await server.run(server_reads, answers, server.create_initialization_options())


async def run_stdio(proxy: Proxy) -> None:
    """Serve the tools on this process's stdin and stdout, for ``proxy``'s user and agent,
    until stdin closes and every request read has its answer."""
    server = create_server(proxy)
    async with stdio_server() as (read_stream, write_stream):
        await serve_lines(server, read_stream, write_stream)


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
