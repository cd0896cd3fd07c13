"""The store service: every proxy operation as JSON over HTTP, for sandboxes that must not
hold database credentials.

    from agent_datastore.server import create_app
    app = create_app(store, secret)   # an ASGI app; run it with uvicorn

The user and agent of every call come from the request's token (``issue_token``), verified
with ``secret``; the namespace comes from the body. The protocol is in ``_protocol``; the
OpenAPI document is served at ``/v1/openapi.json``. Needs the ``server`` extra (Starlette,
and uvicorn for ``agent-datastore serve``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NamedTuple

try:
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - the server extra is not installed
    raise ImportError(
        "agent_datastore.server needs its extra: pip install 'agent-datastore[server]'"
    ) from exc

from . import _core, _health, _protocol, _serving
from . import _operations as ops
from ._async import AsyncDataStore
from ._exceptions import DataStoreUnavailable, HTTPException, TokenRejected
from ._items import Item, ItemInfo
from ._metrics import ServiceMetrics, check_metrics_token
from ._openapi import openapi_document
from ._serving import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_INFLIGHT_BYTES
from ._serving import RateLimiter as _RateLimiter
from ._store import DataStore
from ._tokens import _check_audience, _secret_bytes, verify_token

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_INFLIGHT_BYTES",
    "create_app",
    "serve",
]

DEFAULT_MAX_BODY_BYTES = _protocol.DEFAULT_MAX_BODY_BYTES
DEFAULT_MAX_BATCH = _protocol.DEFAULT_MAX_BATCH

JSON = "application/json"

logger = logging.getLogger("agent_datastore.server")

# The routes of load balancers, orchestrators and Prometheus, beside the operations'.
_SERVICE_ROUTES = ("healthz", "readyz", "metrics")


def _too_large(detail: str) -> HTTPException:
    return HTTPException(413, detail)


def _ttl_of(body: dict[str, Any]) -> timedelta | None:
    milliseconds = body.get("ttl_ms")
    if milliseconds is None:
        return None
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int):
        raise TypeError(f"ttl_ms must be an integer, not {type(milliseconds).__name__}")
    try:
        return timedelta(milliseconds=milliseconds)
    except OverflowError:
        raise ValueError(f"ttl_ms {milliseconds} is out of range") from None


def _check_listing_limit(limit: object) -> None:
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > _core.KEY_PAGE_SIZE:
        raise _too_large(f"a listing returns at most {_core.KEY_PAGE_SIZE} per request")


_MISSING = object()
# Operations whose answer holds stored values or metadata, and so takes room in the budget.
_READS = frozenset({"get", "get_item", "get_many", "list_items", "find_items"})
# Reads of many items: they read up to the answer budget, and decode off the event loop.
_BATCH_READS = frozenset({"get_many", "list_items", "find_items"})
# Operations whose body names many keys (else items), counted against max_batch.
_KEYS_BATCHES = frozenset({"get_many", "delete_many", "find_items"})
# What a read takes of the budget before it knows its size; a single value may need more.
_READ_ROOM = 1024 * 1024


class _Answer(NamedTuple):
    """An operation's answer: the fields of the JSON document, besides ``result``, that it
    adds (``remaining``, ``more``), and the stored bytes it stands for (0: small)."""

    result: Any
    extra: dict[str, Any]
    size: int


def _plain(result: Any) -> _Answer:
    return _Answer(result, {}, 0)


def _operation(
    scope: _core.Scope, settings: ops.Settings, operation: str, body: dict[str, Any], room: int
) -> tuple[ops.Operation[Any], Callable[[Any], _Answer]]:
    """The operation that serves ``operation`` for ``body``, and how its result becomes the
    answer. ``room`` bounds what a batch read reads (at least one item)."""
    key = body.get("key")
    if operation == "get":

        def found(result: tuple[Any, int]) -> _Answer:
            value, size = result
            if value is _MISSING:
                return _Answer({"found": False, "value": None}, {}, 0)
            return _Answer({"found": True, "value": value}, {}, size)

        return ops.sized_get(scope, settings, key, _MISSING), found
    if operation == "get_item":

        def item(result: tuple[Item | None, int]) -> _Answer:
            found_item, size = result
            answer = None if found_item is None else _protocol.item_to_json(found_item)
            return _Answer(answer, {}, size)

        return ops.sized_get_item(scope, settings, key), item
    if operation == "set":
        value, metadata, version = body.get("value"), body.get("metadata"), body.get("if_version")
        return ops.put(scope, settings, key, value, metadata, _ttl_of(body), version), _plain
    if operation == "increment":
        amount = body.get("amount", 1)
        return ops.increment(scope, settings, key, amount, _ttl_of(body)), _plain
    if operation == "delete":
        return ops.delete(scope, settings, key, body.get("if_version")), _plain
    if operation == "list_keys":
        limit = body.get("limit")
        _check_listing_limit(limit)
        prefix, start = body.get("prefix"), body.get("start_after")
        return ops.list_keys(scope, settings, prefix, limit, start), _plain
    if operation == "list_items":
        limit = body.get("limit")
        _check_listing_limit(limit)

        def infos(result: tuple[list[ItemInfo], bool, int]) -> _Answer:
            page, complete, size = result
            listed = [_protocol.item_info_to_json(info) for info in page]
            return _Answer(listed, {} if complete else {"more": True}, size)

        prefix, start = body.get("prefix"), body.get("start_after")
        return ops.list_items_within(scope, settings, prefix, limit, start, room), infos
    if operation == "list_namespaces":
        return ops.list_namespaces(scope, settings), _plain
    if operation == "clear":
        return ops.clear(scope, settings), _plain
    if operation == "get_many":

        def values(result: tuple[dict[str, Any], list[str], int]) -> _Answer:
            found_values, unread, size = result
            return _Answer(found_values, {"remaining": unread} if unread else {}, size)

        return ops.get_many_within(scope, settings, body.get("keys"), room), values
    if operation == "delete_many":
        return ops.delete_many(scope, settings, body.get("keys")), _plain
    if operation == "find_items":
        limit = body.get("limit")
        _check_listing_limit(limit)

        def found_items(result: tuple[list[ops.FoundItem], bool, int]) -> _Answer:
            page, complete, size = result
            listed = [_protocol.found_item_to_json(entry) for entry in page]
            return _Answer(listed, {} if complete else {"more": True}, size)

        # the filter is the client's JSON, which find_items translates itself (_filters):
        # no query of the client's reaches the database
        search = ops.find_items_within(
            scope,
            settings,
            within=body.get("within"),
            keys=body.get("keys"),
            value_filter=body.get("filter"),
            limit=limit,
            offset=body.get("offset", 0),
            max_bytes=room,
        )
        return search, found_items
    if operation == "refresh_expiry":
        items, ttl_field = body.get("items"), body.get("ttl_field")
        return ops.refresh_expiry(scope, settings, items, ttl_field), _plain
    assert operation == "set_many"
    items, metadata = body.get("items"), body.get("metadata")
    return ops.set_many(scope, settings, items, metadata, _ttl_of(body)), _plain


def _one_piece(value: Any) -> list[bytes]:
    return [_protocol.dumps(value)]


def _answer_pieces(
    answer: _Answer, max_bytes: int, encode: Callable[[Any], list[bytes]] = _one_piece
) -> list[bytes]:
    """The answer's JSON, in pieces, at most ``max_bytes`` (but always one value): a
    ``get_many`` or ``list_items`` answer over it keeps what fits, and names the rest as
    ``remaining`` keys or says there is ``more``. ``encode`` turns a value into pieces:
    ``_serving.json_pieces`` for a large answer (in a worker thread), so that it is never
    encoded or joined in one call."""
    result, extra = answer.result, answer.extra
    if not answer.size:
        return encode({"result": result, **extra})
    dumps = _protocol.dumps
    if isinstance(result, dict) and "found" not in result:  # get_many
        entries = [(key, [dumps(key) + b":", *encode(value)]) for key, value in result.items()]
        kept = _fitting(entries, max_bytes)
        remaining = [key for key, _ in entries[len(kept) :]] + extra.get("remaining", [])
        tail = b',"remaining":' + dumps(remaining) if remaining else b""
        return [b'{"result":{', *_joined(kept), b"}" + tail + b"}"]
    if isinstance(result, list):  # list_items, find_items
        kept = _fitting([(None, encode(info)) for info in result], max_bytes)
        more = len(kept) < len(result) or bool(extra)
        return [b'{"result":[', *_joined(kept), b"]" + (b',"more":true' if more else b"") + b"}"]
    return encode({"result": result, **extra})


def _fitting(entries: list[tuple[Any, list[bytes]]], max_bytes: int) -> list[list[bytes]]:
    """The pieces of the first entries whose JSON, with separators and the envelope, fits in
    ``max_bytes``; always the first one."""
    kept: list[list[bytes]] = []
    total = 64  # the envelope, and the "remaining" list's brackets, roughly
    for _, pieces in entries:
        total += sum(map(len, pieces)) + 1
        if kept and total > max_bytes:
            break
        kept.append(pieces)
    return kept


def _joined(entries: list[list[bytes]]) -> list[bytes]:
    """The pieces of ``entries``, with a comma between entries."""
    pieces: list[bytes] = []
    for index, entry in enumerate(entries):
        if index:
            pieces.append(b",")
        pieces.extend(entry)
    return pieces


class _PiecesResponse(Response):
    """A large answer, sent piece by piece (at most ``PIECE_BYTES`` a write) under uvicorn's
    flow control, so that neither the answer nor a copy of it sits whole in the connection's
    buffer; what the request held of the budget is given back after the last piece. A client
    that reads nothing for ``SEND_TIMEOUT_SECONDS`` loses its connection, so that an unread
    answer cannot hold the budget."""

    def __init__(self, pieces: list[bytes], hold: _serving.Hold) -> None:
        super().__init__(media_type=JSON)
        self.headers["content-length"] = str(sum(map(len, pieces)))
        self._pieces = pieces
        self._hold = hold

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pieces, self._pieces = self._pieces, []
        pieces.reverse()  # popped from the end: each piece is dropped once sent
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            while pieces:
                piece = pieces.pop()
                for start in range(0, len(piece), _serving.PIECE_BYTES):
                    message = {
                        "type": "http.response.body",
                        "body": piece[start : start + _serving.PIECE_BYTES],
                        "more_body": True,
                    }
                    await asyncio.wait_for(send(message), _serving.SEND_TIMEOUT_SECONDS)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._hold.release()


def _batch_size(operation: str, body: dict[str, Any]) -> int:
    batch = body.get("keys") if operation in _KEYS_BATCHES else body.get("items")
    return len(batch) if isinstance(batch, (list, dict)) else 0


def create_app(
    store: DataStore | AsyncDataStore,
    secret: str | bytes,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    rate_limit: tuple[int, float] | None = None,
    audience: str | None = None,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    metrics_token: str | None = None,
) -> Starlette:
    """An ASGI application serving ``store`` to the holders of tokens signed with ``secret``.

    The caller owns ``store`` and closes it after the application stops. A request body over
    ``max_body_bytes`` and a ``get_many``, ``set_many``, ``delete_many``, ``find_items`` or
    ``refresh_expiry`` of more than ``max_batch`` keys or items are answered 413.
    ``rate_limit=(requests, per_seconds)`` allows each token that many requests per period
    (the whole number at once, then at the average rate), and answers 429 with
    ``Retry-After`` beyond it. With ``audience``, only tokens issued for that audience
    (``issue_token(..., audience=)``) are accepted; without, only tokens that name none.

    No answer holds more than ``max_answer_bytes`` of JSON, but a single value larger than
    that is still answered alone: a ``get_many`` past it answers what fits and names the keys
    still to fetch (``remaining``), a ``list_items`` or ``find_items`` page past it ends early
    (``more``), and the remote proxies fetch the rest. Requests in flight hold at most about
    ``max_inflight_bytes`` (their bodies, what parsing and encoding them takes, and their
    answers): a request past it waits briefly, then is answered 503 with ``Retry-After``; one
    that would need more than all of it alone is answered 413. One user's agent may hold a
    quarter of it with requests in parallel.

    ``GET /healthz`` answers 200 while the process runs; ``GET /readyz`` 200 when the database
    answers and the store's indexes are in place, else 503; ``GET /metrics`` the Prometheus
    metrics, to anyone, or with ``metrics_token`` only to requests bearing it (401 otherwise).
    """
    if not isinstance(store, (DataStore, AsyncDataStore)):
        raise TypeError(f"store must be a DataStore or AsyncDataStore, not {type(store).__name__}")
    key = _secret_bytes(secret)
    audience = _check_audience(audience)
    for name, limit in (
        ("max_body_bytes", max_body_bytes),
        ("max_batch", max_batch),
        ("max_answer_bytes", max_answer_bytes),
        ("max_inflight_bytes", max_inflight_bytes),
    ):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{name} must be a positive integer, not {limit!r}")
    limiter = None if rate_limit is None else _RateLimiter(*rate_limit)
    budget = _serving.InflightBudget(max_inflight_bytes)
    asynchronous = isinstance(store, AsyncDataStore)
    metrics_key = check_metrics_token(metrics_token)
    metrics = ServiceMetrics([*_protocol.OPERATIONS, *_SERVICE_ROUTES])
    metrics.track_inflight_bytes(lambda: budget.used)

    async def read_body(request: Request, hold: _serving.Hold) -> _serving.ParsedBody:
        """The body, counted against the budget as it arrives: its declared length at once
        (so a request that cannot fit waits before anything is read), else chunk by chunk;
        refused as soon as what parsing it would hold is known to be over the whole budget."""
        declared = request.headers.get("content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        if length is not None:
            if length > max_body_bytes:
                raise _too_large(f"the request body is over {max_body_bytes} bytes")
            await hold.take(length)
        chunks, counted = [], _serving.BodyCost()
        async for chunk in request.stream():
            counted.add(chunk)
            if counted.size > max_body_bytes:
                raise _too_large(f"the request body is over {max_body_bytes} bytes")
            if counted.total > budget.limit:
                raise budget.over_budget(counted.total)  # before the rest is read
            if length is None or counted.size > length:
                await hold.take(len(chunk))
            chunks.append(chunk)
        return _serving.ParsedBody(b"".join(chunks), counted)

    def authorize(request: Request) -> tuple[str, Any]:
        """The verified token's id, which the rate limiter counts (never the token's text:
        one token has one id however it is spelled), and its scope."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRejected("the request has no bearer token")
        scope = verify_token(key, token.strip(), audience=audience)
        return scope.token_id, scope

    async def checked_body(request: Request, operation: str, hold: _serving.Hold) -> Any:
        parsed = await read_body(request, hold)
        await hold.take(parsed.cost - hold.held)  # what parsing and encoding it will hold
        body = await _serving.parse_body(parsed)
        if not isinstance(body, dict):
            raise TypeError(f"the request body must be a JSON object, not {type(body).__name__}")
        spec = _protocol.OPERATIONS[operation]
        unknown = sorted(set(body) - spec.fields)
        if unknown:
            # user and agent come from the token only: any other field is refused, not ignored
            raise ValueError(f"{operation} takes no field {', '.join(map(repr, unknown))}")
        # null is a value only as a value: elsewhere it would silently mean "absent" (a
        # listing without its limit would answer the whole namespace at once)
        nulls = sorted(name for name, value in body.items() if value is None and name != "value")
        if nulls:
            raise TypeError(f"{operation}: {', '.join(map(repr, nulls))} must not be null")
        missing = [name for name in spec.required if name not in body]
        if missing:
            raise ValueError(f"{operation} needs the field {', '.join(map(repr, missing))}")
        if _batch_size(operation, body) > max_batch:
            raise _too_large(f"a batch has at most {max_batch} items")
        return body, not parsed.inline

    async def serve(request: Request, operation: str, hold: _serving.Hold) -> bytes | list[bytes]:
        token_id, token_scope = authorize(request)
        hold.tenant = (token_scope.user_id, token_scope.agent_name)
        if limiter is not None:
            wait = limiter.wait_needed(token_id, token_scope.expires_at)
            if wait:
                raise HTTPException(
                    429,
                    "too many requests for this token",
                    {"Retry-After": _serving.retry_after(wait)},
                )
        body, large_body = await checked_body(request, operation, hold)
        scope = _core.Scope.of(
            token_scope.user_id, token_scope.agent_name, body.get("namespace", "default")
        )
        room = 0
        if operation in _READS:
            # an answer is held three times: the driver's reply, the values decoded from it,
            # and their JSON; a batch read reads at most a third of the room it got
            wanted = max_answer_bytes if operation in _BATCH_READS else _READ_ROOM
            copies = _serving.ANSWER_COPIES
            # at least room for a 1 MiB value, or a sixteenth of a small budget
            minimum = min(copies * _READ_ROOM, max(1, budget.limit // 16))
            room = await hold.take_for_answer(copies * wanted, minimum)
        work, answer_of = _operation(
            scope, store._settings(), operation, body, max(1, room // _serving.ANSWER_COPIES)
        )
        # batch reads decode many values: like large bodies, their own work runs off the loop
        off_loop = large_body or operation in _BATCH_READS
        if asynchronous:
            assert isinstance(store, AsyncDataStore)
            result = await store._run(work, off_loop=off_loop)
        else:
            result = await run_in_threadpool(store._run, work)
        answer = answer_of(result)
        # a single value larger than the room it took: counted once it is known
        hold.take_now(_serving.ANSWER_COPIES * answer.size - room)
        if answer.size > _serving.LARGE_ANSWER_BYTES:
            encode = _serving.json_pieces
            return await asyncio.to_thread(_answer_pieces, answer, max_answer_bytes, encode)
        return b"".join(_answer_pieces(answer, max_answer_bytes))

    def error_response(operation: str, exc: Exception) -> Response:
        status, body = _protocol.encode_error(exc)
        metrics.count_failure(status, exc)
        if status == 500 or isinstance(exc, DataStoreUnavailable):  # not a busy service's 503
            logger.error("%s failed: %s", operation, exc, exc_info=exc)
        if status == 413:
            # so that a remote proxy can split its batch to fit, and send it again
            body["error"]["limits"] = {"max_batch": max_batch, "max_body_bytes": max_body_bytes}
        headers = getattr(exc, "headers", None) if status in (429, 503) else None
        return Response(_protocol.dumps(body), status_code=status, media_type=JSON, headers=headers)

    def endpoint(operation: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            hold = _serving.Hold(budget)
            try:
                content = await serve(request, operation, hold)
            except ClientDisconnect:
                # the client went away, or the connection's deadline closed it, before its
                # body arrived whole: nobody is left to answer
                hold.release()
                logger.info("%s: the client left before its request was whole", operation)
                return Response(status_code=400)
            except Exception as exc:
                hold.release()
                return error_response(operation, exc)
            except BaseException:  # cancelled: the client went away
                hold.release()
                raise
            # the answer's bytes stay counted until they have been sent
            if isinstance(content, list):
                return _PiecesResponse(content, hold)
            background = BackgroundTask(hold.release_when_sent)
            return Response(content, media_type=JSON, background=background)

        return metrics.instrument(operation, handle)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    routes = [
        Route(f"{_protocol.API_PREFIX}/{name}", endpoint(name), methods=["POST"])
        for name in _protocol.OPERATIONS
    ]
    routes.append(Route(f"{_protocol.API_PREFIX}/openapi.json", openapi, methods=["GET"]))
    service_routes = {
        "healthz": _health.healthz,
        "readyz": _health.Readiness(store).endpoint,
        "metrics": metrics.endpoint(metrics_key),
    }
    for name, handler in service_routes.items():
        routes.append(Route(f"/{name}", metrics.instrument(name, handler), methods=["GET"]))

    async def unrouted(request: Request, exc: Exception) -> Response:
        # Starlette's own answer, counted under one label whatever the path
        status = getattr(exc, "status_code", 404)
        metrics.count_unrouted(status)
        return PlainTextResponse(
            getattr(exc, "detail", ""), status_code=status, headers=getattr(exc, "headers", None)
        )

    app = Starlette(routes=routes, exception_handlers={404: unrouted, 405: unrouted})
    app.state.inflight_budget = budget  # for metrics and tests: what requests hold now
    return app


def serve(
    uri: str,
    secret: str | bytes,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    request_timeout: float = 30.0,  # _connections.DEFAULT_REQUEST_TIMEOUT, imported late
    max_connections: int | None = None,
    **app_options: Any,
) -> None:
    """Run the service with uvicorn until it is stopped (Ctrl-C or SIGTERM): open a store on
    ``uri``, serve it with ``create_app(store, secret, **app_options)``, close it at the end.
    With ``ssl_certfile`` and ``ssl_keyfile`` the service speaks HTTPS.

    A connection whose request (headers and body) has not arrived whole ``request_timeout``
    seconds after the connection was accepted, or after the request's first byte, is closed.
    At most ``max_connections`` are open at once, and new ones are closed at once beyond it;
    by default as many as the open-file limit allows (which ``serve`` raises as far as it needs,
    within the hard limit) after the files kept for the database's pool and for accepting
    connections, at most 10,000."""
    import asyncio

    import uvicorn

    from . import _connections
    from ._async import connect_async

    _secret_bytes(secret)  # a bad secret stops here, before anything is opened
    _connections.check_options(request_timeout, max_connections)
    reserved = _connections.OWN_FILES + _connections.database_pool_size(uri)

    async def run() -> None:
        store = connect_async(uri)
        try:
            app = create_app(store, secret, **app_options)
            config = _connections.guarded_config(
                app,
                request_timeout=request_timeout,
                max_connections=max_connections,
                reserved=reserved,
                host=host,
                port=port,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                lifespan="off",
                log_level="info",
            )
            await uvicorn.Server(config).serve()
        finally:
            await store.aclose()

    asyncio.run(run())
