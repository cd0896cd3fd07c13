"""The store service under large requests and answers: answers bounded in bytes and paged,
batches split by the remote proxies, bytes in flight bounded, bodies parsed off the event
loop, and UTF-8 only. Every test runs through both remote proxies where a proxy is involved
(``remote``: the synchronous proxy in front of a ``DataStore``; ``remote-async``: the
asynchronous one in front of an ``AsyncDataStore``)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import agent_datastore
from agent_datastore import DataStoreError
from agent_datastore.server import create_app

from .helpers import snapshot
from .service import RemoteStore, ServiceThread

BACKENDS = ["remote", "remote-async"]


def _remote(service: ServiceThread, backend: str, **options: Any) -> RemoteStore:
    connect = (
        agent_datastore.connect_async if backend == "remote-async" else agent_datastore.connect
    )
    return RemoteStore(service, connect("mongomock://"), **options)


@pytest.fixture(params=BACKENDS)
def small_answers(request: pytest.FixtureRequest, service: ServiceThread) -> Iterator[RemoteStore]:
    """A service whose answers hold at most 5,000 bytes."""
    with _remote(service, request.param, max_answer_bytes=5_000) as store:
        yield store


def _post(store: RemoteStore, operation: str, body: Any, user: str = "user-1") -> httpx.Response:
    token = store.token(user, "agent-a")
    headers = {"authorization": f"Bearer {token}"}
    return httpx.post(f"{store.url}/v1/{operation}", json=body, headers=headers, timeout=60)


def test_a_get_many_answer_over_the_budget_is_paged_and_reassembled(
    small_answers: RemoteStore,
) -> None:
    proxy = small_answers.proxy("user-1", "agent-a")
    values = {f"k{index:02}": {"text": str(index) * 1_500} for index in range(12)}
    assert proxy.set_many(values) == 12
    asked = ["k07", "missing", *sorted(values, reverse=True), "k07", "zz"]
    before = small_answers.requests
    found = proxy.get_many(asked)
    assert found == {key: values[key] for key in asked if key in values}
    assert list(found) == [key for key in dict.fromkeys(asked) if key in values]  # asked order
    # 12 values of about 1,500 bytes in answers of at most 5,000: several requests
    assert small_answers.requests - before >= 4

    answer = _post(small_answers, "get_many", {"keys": sorted(values)})
    assert answer.status_code == 200
    assert len(answer.content) <= 5_000
    document = answer.json()
    assert 1 <= len(document["result"]) < 12
    assert sorted([*document["result"], *document["remaining"]]) == sorted(values)


def test_a_single_value_larger_than_the_budget_is_answered_alone(
    small_answers: RemoteStore,
) -> None:
    proxy = small_answers.proxy("user-1", "agent-a")
    proxy.set_many({"big": "x" * 20_000, "bigger": "y" * 30_000, "small": 1})
    assert proxy.get("bigger") == "y" * 30_000
    assert proxy.get_many(["small", "big", "bigger"]) == {
        "small": 1,
        "big": "x" * 20_000,
        "bigger": "y" * 30_000,
    }
    answer = _post(small_answers, "get_many", {"keys": ["big", "bigger", "small"]})
    document = answer.json()
    assert list(document["result"]) == ["big"]
    assert sorted(document["remaining"]) == ["bigger", "small"]


def test_a_list_items_page_over_the_budget_ends_early_and_the_proxy_goes_on(
    small_answers: RemoteStore,
) -> None:
    proxy = small_answers.proxy("user-1", "agent-a")
    for index in range(8):
        proxy.set(f"item-{index}", index, metadata={"note": "n" * 1_200})
    before = small_answers.requests
    infos = proxy.list_items()
    assert [info.key for info in infos] == [f"item-{index}" for index in range(8)]
    assert all(info.metadata == {"note": "n" * 1_200} for info in infos)
    assert small_answers.requests - before >= 2
    assert [info.key for info in proxy.list_items(limit=5)] == [f"item-{i}" for i in range(5)]
    answer = _post(small_answers, "list_items", {"limit": 1_000})
    assert answer.json()["more"] is True
    assert len(answer.content) <= 5_000


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_over_the_service_limits_is_split_by_the_proxies(
    service: ServiceThread, backend: str
) -> None:
    with _remote(service, backend, max_batch=3, max_body_bytes=2_000) as store:
        # the service itself refuses the batch whole, and says its limits
        raw = _post(store, "set_many", {"items": {"a": 0, "b": 0, "c": 0, "d": 0}}, "user-2")
        assert raw.status_code == 413
        assert raw.json()["error"]["limits"] == {"max_batch": 3, "max_body_bytes": 2_000}
        assert snapshot(store.backend) == []

        proxy = store.proxy("user-1", "agent-a")
        items = {f"key-{index}": "v" * 300 for index in range(10)}
        assert proxy.set_many(items, metadata={"batch": 1}) == 10
        assert proxy.get_many(list(items)) == items
        assert proxy.get_item("key-9").metadata == {"batch": 1}  # type: ignore[union-attr]
        assert len(snapshot(store.backend)) == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_split_batch_that_fails_midway_leaves_the_batches_before_it_written(
    service: ServiceThread, backend: str
) -> None:
    connect = (
        agent_datastore.connect_async if backend == "remote-async" else agent_datastore.connect
    )
    # the store behind the service takes values of at most 100 bytes: a check only it makes
    with RemoteStore(service, connect("mongomock://", max_value_bytes=100), max_batch=2) as store:
        proxy = store.proxy("user-1", "agent-a")
        items = {"a": 1, "b": 2, "c": "x" * 200, "d": 4}
        with pytest.raises(ValueError, match="over this store's limit"):
            proxy.set_many(items)
        assert proxy.get_many(list(items)) == {"a": 1, "b": 2}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_request_past_the_inflight_budget_gets_503_and_writes_nothing(
    service: ServiceThread, backend: str
) -> None:
    with _remote(service, backend, max_inflight_bytes=100_000) as store:
        proxy = store.proxy("user-1", "agent-a")
        proxy.set("before", 1)
        before = snapshot(store.backend)
        # a request whose declared body holds most of the budget while it is being sent
        holder = _hold_open(store, "user-2", 90_000)
        try:
            # wait until the service holds the holder's bytes: a probe of the same size that
            # would be refused (an empty key) gets 503 instead of 400 from then on
            for _ in range(100):
                probe = _post(store, "set", {"key": "", "value": "v" * 20_000})
                if probe.status_code == 503:
                    break
                assert probe.status_code == 400
            assert probe.status_code == 503
            assert probe.headers["retry-after"] == "1"
            assert probe.json()["error"]["message"].startswith("the service is busy")
            with pytest.raises(agent_datastore.DataStoreUnavailable):
                proxy.set("k", "v" * 20_000)  # needs 4 x 20 KB: no room until the holder ends
            assert snapshot(store.backend) == before
        finally:
            holder.close()
        proxy.set("k", "v" * 20_000)  # room again once the holder has gone
        assert proxy.get("k") == "v" * 20_000

        # a request that needs more than the whole budget on its own is 413 at once
        with pytest.raises(agent_datastore.HTTPException) as raised:
            proxy.set("huge", ["v" * 30] * 5_000)
        assert raised.value.status_code == 413
        assert "in-flight budget" in raised.value.detail
        assert proxy.get("huge") is None


def _hold_open(store: RemoteStore, user: str, declared: int) -> socket.socket:
    """A connection whose request (a ``set``) declares ``declared`` bytes of body and sends
    only its start: the service holds the declared bytes while it waits for the rest."""
    token = store.token(user, "agent-a")
    host, port = store.url.split("//")[1].split("/")[0].split(":")
    path = "/" + store.url.split("/", 3)[3] + "/v1/set"
    connection = socket.create_connection((host, int(port)))
    connection.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        '{"key": "held", "value": "'.encode()
    )
    return connection


def _wait_until_held(store: RemoteStore, amount: int) -> None:
    budget = store.app.state.inflight_budget
    for _ in range(1_000):
        if budget.used >= amount:
            return
        time.sleep(0.005)
    raise AssertionError(f"the service holds {budget.used} bytes, not {amount}")


def _wait_until_given_back(store: RemoteStore) -> None:
    # the room is given back once the last piece has gone out, which the client may have
    # read a moment before the service's task gets to its release
    budget = store.app.state.inflight_budget
    for _ in range(1_000):
        if budget.used == 0:
            return
        time.sleep(0.005)
    raise AssertionError(f"the service still holds {budget.used} bytes")


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_tenant_cannot_take_the_whole_budget_with_requests_in_parallel(
    service: ServiceThread, backend: str
) -> None:
    # a budget of 100,000 bytes: one tenant may hold a quarter of it with several requests
    with _remote(service, backend, max_inflight_bytes=100_000) as store:
        first = _hold_open(store, "hostile", 20_000)  # alone: may take more than its share
        second = None
        try:
            _wait_until_held(store, 20_000)
            second = _hold_open(store, "hostile", 20_000)  # beside it: over the share
            second.settimeout(30)
            answer = second.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503")
            assert b"retry-after: 1" in answer.lower()
            # meanwhile other tenants have the rest of the budget
            other = store.proxy("user-1", "agent-a")
            other.set("k", "v" * 10_000)
            assert other.get("k") == "v" * 10_000
        finally:
            first.close()
            if second is not None:
                second.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_small_request_completes_while_a_30_mib_body_is_being_processed(
    service: ServiceThread, backend: str
) -> None:
    # a 30 MiB body of about three million values: json.loads would hold the event loop (and the
    # GIL) for the whole parse; the service parses it in a worker thread, as Python code
    budget = 1024 * 1024 * 1024
    with _remote(service, backend, max_inflight_bytes=budget) as store:
        proxy = store.proxy("user-1", "agent-a")
        proxy.set("small", 1)
        value = ["x" * 6] * (30 * 1024 * 1024 // 10)
        content = json.dumps({"key": "heavy", "value": value}).encode()
        assert len(content) >= 30 * 1024 * 1024
        token = store.token("user-1", "agent-a")
        finished: list[bool] = []
        heavy_status: list[int] = []

        def send_heavy() -> None:
            response = httpx.post(
                f"{store.url}/v1/set",
                content=content,
                headers={"authorization": f"Bearer {token}"},
                timeout=120,
            )
            heavy_status.append(response.status_code)
            finished.append(True)

        heavy = threading.Thread(target=send_heavy)
        heavy.start()
        # wait until the service has read the heavy body and starts parsing it: it then holds
        # what parsing will take (four times the body, and more)
        budget = store.app.state.inflight_budget
        for _ in range(6_000):
            if budget.used >= 4 * len(content) or finished:
                break
            time.sleep(0.005)
        assert budget.used >= 4 * len(content)
        answered_meanwhile = 0
        for _ in range(2_000):
            assert proxy.get("small") == 1
            if finished:
                break
            answered_meanwhile += 1
        heavy.join(120)
        assert heavy_status == [400]  # a value of over 16 MiB: refused, after parsing
        # on the event loop (json.loads holds it for the whole parse) none would be answered
        assert answered_meanwhile >= 10
        assert proxy.get("heavy") is None


def test_bodies_must_be_utf8(service: ServiceThread) -> None:
    with _remote(service, "remote") as store:
        token = store.token("user-1", "agent-a")
        for encoding in ("utf-16", "utf-32", "utf-8-sig"):
            response = httpx.post(
                f"{store.url}/v1/set",
                content=json.dumps({"key": "k", "value": 1}).encode(encoding),
                headers={"authorization": f"Bearer {token}"},
            )
            assert response.status_code == 400, encoding
            assert response.json()["error"]["type"] == "ValueError"
        assert store.proxy("user-1", "agent-a").get("k") is None


def test_a_broken_paging_answer_is_refused_rather_than_looped_on() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        keys = json.loads(request.content)["keys"]
        return httpx.Response(200, json={"result": {}, "remaining": keys})  # no progress

    token = agent_datastore.issue_token("s" * 32, "user-1", "agent-a")
    client = httpx.Client(transport=httpx.MockTransport(handler))
    proxy = agent_datastore.RemoteDataStoreProxy("http://store", token, http_client=client)
    with pytest.raises(DataStoreError, match="not the protocol's"):
        proxy.get_many(["a", "b"])


def test_what_a_request_held_is_given_back_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a response's background task that is a plain function runs in Starlette's thread pool:
    # a thread hop per request, which cost the service a third of its throughput
    def no_thread_pool(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a background task went through the thread pool")

    monkeypatch.setattr("starlette.background.run_in_threadpool", no_thread_pool)
    secret = "a secret for the budget's release test, 32+ bytes"
    token = agent_datastore.issue_token(secret, "user-1", "agent-a")
    store = agent_datastore.connect_async("mongomock://")
    app = create_app(store, secret)

    async def exchange() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            statuses = []
            for operation, body in [
                ("set", {"key": "k", "value": "v" * 1_000}),
                ("get", {"key": "k"}),
                ("get_many", {"keys": ["k"]}),
            ]:
                response = await client.post(f"/v1/{operation}", json=body, headers=headers)
                statuses.append(response.status_code)
            await store.aclose()
            return statuses

    assert asyncio.run(exchange()) == [200, 200, 200]
    assert app.state.inflight_budget.used == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_answers_are_sent_in_pieces_and_arrive_whole(
    service: ServiceThread, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent_datastore._serving.PIECE_BYTES", 64 * 1024)
    with _remote(service, backend) as store:
        proxy = store.proxy("user-1", "agent-a")
        values = {
            "text": 'é\u2028"\\' * 100_000,
            "list": [{"n": index, "$x": [2**70, 1.5, None]} for index in range(20_000)],
            "number": 2**100,
        }
        proxy.set_many(values, metadata={"m": "v" * 300_000})
        assert proxy.get("text") == values["text"]
        assert proxy.get_many(["number", "list", "text"]) == values
        item = proxy.get_item("list")
        assert item is not None
        assert item.value == values["list"]
        assert [info.metadata for info in proxy.list_items()] == [{"m": "v" * 300_000}] * 3
        answer = _post(store, "get_many", {"keys": ["text", "list"]})
        assert int(answer.headers["content-length"]) == len(answer.content) > 256 * 1024
        _wait_until_given_back(store)


def test_an_answer_nobody_reads_loses_its_connection_and_gives_back_its_room(
    service: ServiceThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent_datastore._serving.SEND_TIMEOUT_SECONDS", 0.5)
    with _remote(service, "remote") as store:
        keys = [f"big-{index}" for index in range(3)]
        store.proxy("user-1", "agent-a").set_many(dict.fromkeys(keys, "x" * (8 * 2**20)))
        budget = store.app.state.inflight_budget
        token = store.token("user-1", "agent-a")
        host, port = store.url.split("//")[1].split("/")[0].split(":")
        path = "/" + store.url.split("/", 3)[3] + "/v1/get_many"
        body = json.dumps({"keys": keys}).encode()
        reader = socket.create_connection((host, int(port)))
        try:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            reader.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            _wait_until_held(store, 3 * 8 * 2**20)  # the answer is being sent, and not read
            for _ in range(400):
                if budget.used == 0:
                    break
                time.sleep(0.05)
            assert budget.used == 0  # given back although the answer was never read
            received = 0
            reader.settimeout(10)
            while chunk := reader.recv(1 << 20):
                received += len(chunk)
            assert received < 3 * 8 * 2**20  # the service closed the connection midway
        finally:
            reader.close()


def test_a_body_that_could_never_fit_is_refused_before_the_rest_of_it_arrives(
    service: ServiceThread,
) -> None:
    with _remote(service, "remote") as store:
        token = store.token("user-1", "agent-a")
        host, port = store.url.split("//")[1].split("/")[0].split(":")
        path = "/" + store.url.split("/", 3)[3] + "/v1/set"
        declared = 30 * 2**20  # 30 MiB of empty objects: over a gigabyte once parsed
        sender = socket.create_connection((host, int(port)))
        try:
            sender.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n".encode()
                + b'{"key": "d", "value": ['
                + b"{}," * (3 * 2**20)  # 9 MiB of it, and nothing more
            )
            sender.settimeout(30)
            answer = b""
            while b"}}" not in answer and len(answer) < 4096:
                answer += sender.recv(4096)
            assert answer.startswith(b"HTTP/1.1 413")
            assert b"in-flight budget" in answer
        finally:
            sender.close()
        assert store.proxy("user-1", "agent-a").get("d") is None
