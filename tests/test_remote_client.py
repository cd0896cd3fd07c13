"""The remote proxy's own behaviour, with httpx transports that fail on purpose: which calls
are retried, what a broken or silent service raises, and that bad input sends nothing."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from agent_datastore import (
    AsyncRemoteDataStoreProxy,
    DataStoreError,
    DataStoreUnavailable,
    HTTPException,
    RemoteDataStoreProxy,
    TokenRejected,
    VersionConflict,
    issue_token,
)

from .service import SECRET

URL = "http://store.test"
TOKEN = issue_token(SECRET, "user-1", "agent-a")


class Script:
    """An httpx transport that answers each request with the next of its steps: an
    exception to raise, or a (status, JSON body) to answer."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        status, body = step
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)


def proxy_over(script: Script) -> RemoteDataStoreProxy:
    client = httpx.Client(base_url=URL, transport=httpx.MockTransport(script))
    return RemoteDataStoreProxy(URL, TOKEN, http_client=client)


OK_VALUE = (200, {"result": {"found": True, "value": 1}})
OK_NONE = (200, {"result": None})
BROKEN = [
    httpx.ReadError("connection reset"),
    httpx.RemoteProtocolError("server disconnected"),
    httpx.WriteError("broken pipe"),
]
READS: dict[str, Callable[[Any], Any]] = {
    "get": lambda p: p.get("k"),
    "get_item": lambda p: p.get_item("k"),
    "get_many": lambda p: p.get_many(["k"]),
    "list_keys": lambda p: p.list_keys(),
    "list_items": lambda p: p.list_items(),
    "list_namespaces": lambda p: p.list_namespaces(),
}
WRITES: dict[str, Callable[[Any], Any]] = {
    "set": lambda p: p.set("k", 1),
    "set if_version": lambda p: p.set("k", 1, if_version=1),
    "increment": lambda p: p.increment("k"),
    "delete": lambda p: p.delete("k"),
    "delete_many": lambda p: p.delete_many(["k"]),
    "clear": lambda p: p.clear(),
    "set_many": lambda p: p.set_many({"k": 1}),
}
READ_ANSWERS = {
    "get": OK_VALUE,
    "get_item": OK_NONE,
    "get_many": (200, {"result": {}}),
    "list_keys": (200, {"result": []}),
    "list_items": (200, {"result": []}),
    "list_namespaces": (200, {"result": []}),
}


@pytest.mark.parametrize("error", BROKEN, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("name", list(READS))
def test_a_read_is_sent_once_more_after_a_broken_connection(name: str, error: Exception) -> None:
    script = Script(error, READ_ANSWERS[name])
    with proxy_over(script) as proxy:
        READS[name](proxy)
    assert len(script.requests) == 2


@pytest.mark.parametrize("error", BROKEN, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("name", list(WRITES))
def test_a_write_is_not_resent_after_a_broken_connection(name: str, error: Exception) -> None:
    # the service may have applied it: sending it again could count or version it twice
    script = Script(error, OK_NONE)
    with proxy_over(script) as proxy, pytest.raises(DataStoreUnavailable) as raised:
        WRITES[name](proxy)
    assert len(script.requests) == 1
    assert isinstance(raised.value.__cause__, httpx.TransportError)


@pytest.mark.parametrize("name", list(WRITES))
def test_a_write_is_sent_once_more_when_the_connection_could_not_be_opened(name: str) -> None:
    counted = ("increment", "clear", "set_many", "delete_many")
    answer = (200, {"result": 1}) if name in counted else OK_NONE
    script = Script(httpx.ConnectError("connection refused"), answer)
    with proxy_over(script) as proxy:
        WRITES[name](proxy)
    assert len(script.requests) == 2


@pytest.mark.parametrize("name", [*READS, *WRITES])
def test_a_second_failure_is_unavailable(name: str) -> None:
    script = Script(httpx.ConnectError("connection refused"))
    call = {**READS, **WRITES}[name]
    with proxy_over(script) as proxy, pytest.raises(DataStoreUnavailable, match="cannot reach"):
        call(proxy)
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("slow")]
)
def test_a_timeout_is_unavailable_and_not_retried(error: Exception) -> None:
    script = Script(error, OK_VALUE)
    with proxy_over(script) as proxy, pytest.raises(DataStoreUnavailable, match="within 10 s"):
        proxy.get("k")
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((401, {"error": {"type": "TokenRejected", "message": "expired"}}), TokenRejected),
        ((403, b"<html>forbidden</html>"), TokenRejected),
        (
            (503, {"error": {"type": "DataStoreUnavailable", "message": "down"}}),
            DataStoreUnavailable,
        ),
        ((502, b"<html>bad gateway</html>"), DataStoreUnavailable),
        ((504, b""), DataStoreUnavailable),
        ((500, {"error": {"type": "DataStoreError", "message": "refused"}}), DataStoreError),
        ((400, {"error": {"type": "TypeError", "message": "key must be a str"}}), TypeError),
        ((400, {"error": {"type": "ValueError", "message": "too big"}}), ValueError),
        ((400, {"error": {"type": "SystemExit", "message": "no"}}), HTTPException),
        ((413, {"error": {"type": "HTTPException", "message": "too large"}}), HTTPException),
        ((404, b"not found"), HTTPException),
        ((200, b"not json"), DataStoreError),
        ((200, {"no": "result"}), DataStoreError),
    ],
)
def test_each_answer_of_the_service_is_the_local_proxys_exception(
    answer: tuple[int, Any], error: type[Exception]
) -> None:
    with proxy_over(Script(answer)) as proxy, pytest.raises(error) as raised:
        proxy.get("k")
    assert type(raised.value) is error
    if isinstance(raised.value, HTTPException):
        expected = {DataStoreError: 500, DataStoreUnavailable: 503}.get(error, answer[0])
        assert raised.value.status_code == expected


def test_a_version_conflict_carries_its_versions() -> None:
    conflict = {"type": "VersionConflict", "message": "m", "key": "k"}
    conflict.update(expected_version=2, current_version=3)
    proxy = proxy_over(Script((409, {"error": conflict})))
    with proxy, pytest.raises(VersionConflict) as raised:
        proxy.set("k", 1, if_version=2)
    assert (raised.value.key, raised.value.expected_version) == ("k", 2)
    assert raised.value.current_version == 3


def test_a_rate_limit_answer_keeps_its_retry_after() -> None:
    answer = httpx.Response(
        429,
        json={"error": {"type": "HTTPException", "message": "slow down"}},
        headers={"Retry-After": "3"},
    )
    client = httpx.Client(base_url=URL, transport=httpx.MockTransport(lambda _: answer))
    proxy = RemoteDataStoreProxy(URL, TOKEN, http_client=client)
    with client, pytest.raises(HTTPException) as raised:
        proxy.get("k")
    assert raised.value.status_code == 429
    assert raised.value.headers == {"Retry-After": "3"}


BAD_CALLS: dict[str, Callable[[Any], Any]] = {
    "set a set": lambda p: p.set("k", {1, 2}),
    "set NaN": lambda p: p.set("k", float("nan")),
    "set empty key": lambda p: p.set("", 1),
    "set oversize": lambda p: p.set("k", "x" * (16 * 1024 * 1024)),
    "set bad metadata": lambda p: p.set("k", 1, metadata={"a.b": 1}),
    "set bad ttl": lambda p: p.set("k", 1, ttl=-1),
    "set bad if_version": lambda p: p.set("k", 1, if_version=-1),
    "get a dict": lambda p: p.get({"$ne": None}),
    "increment a float": lambda p: p.increment("k", 1.5),
    "delete bad if_version": lambda p: p.delete("k", if_version="1"),
    "get_many a str": lambda p: p.get_many("abc"),
    "delete_many a str": lambda p: p.delete_many("abc"),
    "delete_many an empty key": lambda p: p.delete_many(["a", ""]),
    "set_many a list": lambda p: p.set_many([("k", 1)]),
    "set_many a bad value": lambda p: p.set_many({"a": 1, "b": object()}),
    "list_keys bad limit": lambda p: p.list_keys(limit=0),
    "list_keys bad prefix": lambda p: p.list_keys(prefix=b"a"),
    "list_items bad start": lambda p: p.list_items(start_after=5),
    "iter_keys bad prefix": lambda p: p.iter_keys(prefix=5),
    "use_namespace empty": lambda p: p.use_namespace(""),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=list(BAD_CALLS))
def test_bad_input_raises_before_any_request(call: Callable[[Any], Any]) -> None:
    script = Script(OK_NONE)
    with proxy_over(script) as proxy, pytest.raises((TypeError, ValueError)):
        call(proxy)
    assert script.requests == []


def test_empty_batches_send_nothing() -> None:
    script = Script(OK_NONE)
    with proxy_over(script) as proxy:
        assert proxy.get_many([]) == {}
        assert proxy.set_many({}) == 0
        assert proxy.delete_many([]) == 0
    assert script.requests == []


def test_requests_carry_the_token_and_the_namespace_never_the_user() -> None:
    script = Script(OK_VALUE)
    with proxy_over(script) as proxy:
        proxy.use_namespace("notes").get("k")
    (request,) = script.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.url.path == "/v1/get"
    assert request.read() == b'{"namespace":"notes","key":"k"}'


def test_a_long_listing_is_paged_after_the_last_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_datastore import _core

    monkeypatch.setattr(_core, "KEY_PAGE_SIZE", 2)
    script = Script((200, {"result": ["a", "b"]}), (200, {"result": ["c"]}))
    with proxy_over(script) as proxy:
        assert proxy.list_keys(prefix="x") == ["a", "b", "c"]
    bodies = [request.read() for request in script.requests]
    assert bodies == [
        b'{"namespace":"default","prefix":"x","limit":2}',
        b'{"namespace":"default","prefix":"x","limit":2,"start_after":"b"}',
    ]


@pytest.mark.parametrize(
    ("url", "token", "error"),
    [
        ("ftp://store", TOKEN, ValueError),
        ("store.test", TOKEN, ValueError),
        (None, TOKEN, TypeError),
        (URL, "not a token", ValueError),
        (URL, None, TypeError),
        (URL, TOKEN.encode(), TypeError),
    ],
    # the token is made at import, with its own time and id: spelled out, it would make the
    # ids differ between pytest-xdist's workers (pytest 8 writes a long str in the id)
    ids=["ftp url", "url without scheme", "url None", "not a token", "token None", "token bytes"],
)
def test_a_proxy_needs_a_service_url_and_a_token(url: Any, token: Any, error: type) -> None:
    with pytest.raises(error):
        RemoteDataStoreProxy(url, token)


def test_the_proxy_knows_its_scope_from_the_token() -> None:
    with RemoteDataStoreProxy(URL, TOKEN, "notes") as proxy:
        assert (proxy.user_id, proxy.agent_name, proxy.namespace) == ("user-1", "agent-a", "notes")
        assert "user-1" in repr(proxy)
        assert TOKEN not in repr(proxy)


@pytest.fixture
def silent_service() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_silent_service_is_unavailable_after_the_timeout(silent_service: str) -> None:
    proxy = RemoteDataStoreProxy(silent_service, TOKEN, timeout=0.2)
    with proxy, pytest.raises(DataStoreUnavailable, match=r"within 0\.2 s"):
        proxy.get("k")


def test_a_closed_port_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = RemoteDataStoreProxy(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    with proxy, pytest.raises(DataStoreUnavailable, match="cannot reach"):
        proxy.set("k", 1)


def test_the_async_twin_retries_and_fails_as_the_sync_proxy_does() -> None:
    async def attempts(call: Callable[[Any], Any], *steps: Any) -> tuple[Any, int]:
        script = Script(*steps)
        client = httpx.AsyncClient(base_url=URL, transport=httpx.MockTransport(script))
        async with client, AsyncRemoteDataStoreProxy(URL, TOKEN, http_client=client) as proxy:
            try:
                outcome = await call(proxy)
            except DataStoreUnavailable as exc:
                outcome = exc
        return outcome, len(script.requests)

    reset = httpx.ReadError("reset")
    value, sent = asyncio.run(attempts(lambda p: p.get("k"), reset, OK_VALUE))
    assert (value, sent) == (1, 2)
    failure, sent = asyncio.run(attempts(lambda p: p.get("k"), reset))
    assert isinstance(failure, DataStoreUnavailable)
    assert sent == 2
    failure, sent = asyncio.run(attempts(lambda p: p.set("k", 1), reset, OK_NONE))
    assert isinstance(failure, DataStoreUnavailable)
    assert sent == 1
