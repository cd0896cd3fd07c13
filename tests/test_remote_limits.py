"""The store service's limits: body size, batch size, listing page and per-token rate, each
answered with its status and changing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import agent_datastore
from agent_datastore import HTTPException, RemoteDataStoreProxy
from agent_datastore.server import _RateLimiter, create_app

from .helpers import snapshot
from .service import RemoteStore, ServiceThread


@pytest.fixture
def limited(service: ServiceThread) -> Iterator[RemoteStore]:
    backend = agent_datastore.connect("mongomock://")
    options: dict[str, Any] = {"max_body_bytes": 2_000, "max_batch": 3, "rate_limit": (5, 60)}
    with RemoteStore(service, backend, **options) as store:
        yield store


def test_a_body_over_the_limit_is_413_and_changes_nothing(limited: RemoteStore) -> None:
    proxy = limited.proxy("user-1", "agent-a")
    before = snapshot(limited.backend)
    with pytest.raises(HTTPException) as raised:
        proxy.set("k", "x" * 3_000)
    assert raised.value.status_code == 413
    assert "2000 bytes" in raised.value.detail
    assert snapshot(limited.backend) == before


def test_a_body_without_a_length_is_counted_as_it_arrives(limited: RemoteStore) -> None:
    token = limited.token("user-1", "agent-a")
    chunks = iter([b'{"key": "k", "value": "', b"x" * 3_000, b'"}'])
    response = httpx.post(
        f"{limited.url}/v1/set",
        content=chunks,  # streamed: no Content-Length header
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 413
    assert limited.proxy("user-1", "agent-a").get("k") is None


def test_a_batch_over_the_limit_is_413_and_the_proxy_sends_it_in_parts(
    limited: RemoteStore,
) -> None:
    token = limited.token("user-2", "agent-a")
    before = snapshot(limited.backend)
    for operation, body in [
        ("set_many", {"items": {"a": 0, "b": 0, "c": 0, "d": 0}}),
        ("get_many", {"keys": ["a", "b", "c", "d"]}),
    ]:
        response = httpx.post(
            f"{limited.url}/v1/{operation}",
            json=body,
            headers={"authorization": f"Bearer {token}"},
        )
        assert response.status_code == 413
        assert "at most 3 items" in response.json()["error"]["message"]
    assert snapshot(limited.backend) == before
    # the proxy learns the limit from the first 413, then sends 3 + 1 (rate limit: 5)
    proxy = limited.proxy("user-1", "agent-a")
    assert proxy.set_many({"a": 1, "b": 2, "c": 3, "d": 4}) == 4
    assert proxy.get_many(["a", "b", "c", "d"]) == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_a_delete_many_over_the_batch_limit_is_413_and_the_proxy_sends_it_in_parts(
    limited: RemoteStore,
) -> None:
    limited.backend.proxy("user-3", "agent-a").set_many({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    before = snapshot(limited.backend)
    response = httpx.post(
        f"{limited.url}/v1/delete_many",
        json={"keys": ["a", "b", "c", "d"]},
        headers={"authorization": f"Bearer {limited.token('user-3', 'agent-a')}"},
    )
    assert response.status_code == 413
    assert "at most 3 items" in response.json()["error"]["message"]
    assert response.json()["error"]["limits"]["max_batch"] == 3
    assert snapshot(limited.backend) == before  # nothing of a refused batch is deleted
    # the proxy learns the limit from the 413, then sends 3 + 1 (a repeat counts once)
    proxy = limited.proxy("user-3", "agent-a")
    assert proxy.delete_many(["a", "b", "zz", "a", "d"]) == 3
    assert limited.backend.proxy("user-3", "agent-a").list_keys() == ["c", "e"]


def test_a_listing_page_over_the_cap_is_413(service: ServiceThread) -> None:
    with RemoteStore(service, agent_datastore.connect("mongomock://")) as store:
        token = store.token("user-1", "agent-a")
        response = httpx.post(
            f"{store.url}/v1/list_keys",
            json={"limit": 1_001},
            headers={"authorization": f"Bearer {token}"},
        )
    assert response.status_code == 413


def test_a_token_over_its_rate_is_429_with_retry_after(limited: RemoteStore) -> None:
    first = limited.proxy("user-1", "agent-a")
    for _ in range(5):
        first.get("k")
    with pytest.raises(HTTPException) as raised:
        first.get("k")
    assert raised.value.status_code == 429
    assert raised.value.headers is not None
    assert 1 <= int(raised.value.headers["Retry-After"]) <= 12  # one request in 60 / 5 s
    # the limit is per token: another token, even of the same user and agent, has its own
    assert limited.proxy("user-1", "agent-a").get("k") is None


def test_no_limit_without_a_rate_limit(service: ServiceThread) -> None:
    with RemoteStore(service, agent_datastore.connect("mongomock://")) as store:
        proxy = store.proxy("user-1", "agent-a")
        for _ in range(30):
            proxy.get("k")


def test_the_rate_limiter_refills_and_forgets_idle_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("agent_datastore._serving.time.monotonic", lambda: clock[0])
    limiter = _RateLimiter(2, 10)  # two at once, then one every 5 s
    forever = 1e12
    assert limiter.wait_needed("t", forever) == 0
    assert limiter.wait_needed("t", forever) == 0
    assert limiter.wait_needed("t", forever) == pytest.approx(5)
    clock[0] += 5
    assert limiter.wait_needed("t", forever) == 0
    for number in range(9_999):  # with "t", the most kept before a sweep
        limiter.wait_needed(f"other-{number}", forever)
    clock[0] += 10  # every bucket refilled: none holds anything a new one would not
    limiter.wait_needed("new", forever)
    assert len(limiter._buckets) <= 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_body_bytes": 0}, ValueError),
        ({"max_batch": -1}, ValueError),
        ({"max_batch": 1.5}, ValueError),
        ({"rate_limit": (0, 1)}, ValueError),
        ({"rate_limit": (10, 0)}, ValueError),
    ],
)
def test_limits_must_be_positive(options: dict[str, Any], error: type[Exception]) -> None:
    with agent_datastore.connect("mongomock://") as store, pytest.raises(error):
        create_app(store, "a secret that is long enough for the service", **options)


def test_create_app_needs_a_store() -> None:
    with pytest.raises(TypeError, match="DataStore or AsyncDataStore"):
        create_app("mongomock://", "a secret that is long enough for the service")  # type: ignore[arg-type]


def test_a_remote_proxy_closes_only_the_client_it_made() -> None:
    token = agent_datastore.issue_token("a secret that is long enough for the service", "u", "a")
    client = httpx.Client()
    with RemoteDataStoreProxy("http://127.0.0.1:9", token, http_client=client):
        pass
    assert not client.is_closed
    client.close()
