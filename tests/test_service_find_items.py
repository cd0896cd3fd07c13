"""The store service's side of the LangGraph store: ``find_items`` (a search across the
namespaces of the token's agent) and ``refresh_expiry``, as the remote halves
``_protocol.find_items_calls`` and ``refresh_expiry_calls`` drive them through both remote
proxies (``remote``: the synchronous proxy in front of a ``DataStore``; ``remote-async``: the
asynchronous one in front of an ``AsyncDataStore``). What they answer is what the local
operations answer on the same store; the user and agent are the token's only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from agent_datastore import DataStoreError, _core, _protocol
from agent_datastore import _operations as ops

from .helpers import MovableClock
from .service import RemoteStore, ServiceThread, remote_store

BACKENDS = ["remote", "remote-async"]
NAMESPACES = ["a", "a.b", "a.b.c", "ab", "a-b", "b", "é"]
AGENT = "agent-a"


def _remote(
    request: pytest.FixtureRequest, service: ServiceThread, **options: Any
) -> Iterator[RemoteStore]:
    """The service in front of an embedded store whose clock (``store.clock``) a test moves."""
    clock = MovableClock(frozen=True)
    asynchronous = request.param == "remote-async"
    for store in remote_store(service, clock, asynchronous, **options):
        store.clock = clock  # type: ignore[attr-defined]
        yield store


@pytest.fixture(params=BACKENDS)
def remote(request: pytest.FixtureRequest, service: ServiceThread) -> Iterator[RemoteStore]:
    yield from _remote(request, service)


@pytest.fixture(params=BACKENDS)
def small_answers(request: pytest.FixtureRequest, service: ServiceThread) -> Iterator[RemoteStore]:
    """A service whose answers hold at most 5,000 bytes."""
    yield from _remote(request, service, max_answer_bytes=5_000)


@pytest.fixture(params=BACKENDS)
def small_batches(request: pytest.FixtureRequest, service: ServiceThread) -> Iterator[RemoteStore]:
    """A service that takes at most 2 keys or items per request."""
    yield from _remote(request, service, max_batch=2)


def _search_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    defaults = {"keys": None, "value_filter": None, "limit": None, "offset": 0}
    return {**defaults, **arguments}


def remote_search(
    remote: RemoteStore, user: str = "user-1", namespace: str = "a", **arguments: Any
) -> list[ops.FoundItem]:
    """``find_items`` through the service, with a token of ``user``'s agent."""
    proxy = remote.proxy(user, AGENT, namespace)
    twin = getattr(proxy, "_proxy", proxy)  # the async proxy behind tests/twins.py's facade
    calls = _protocol.find_items_calls(
        twin._scope, limits=twin._service.limits, **_search_arguments(arguments)
    )
    return proxy._drive(calls)  # type: ignore[no-any-return]


def remote_refresh(
    remote: RemoteStore, items: Any, user: str = "user-1", ttl_field: str = "ttl"
) -> int:
    proxy = remote.proxy(user, AGENT)
    twin = getattr(proxy, "_proxy", proxy)
    calls = _protocol.refresh_expiry_calls(twin._scope, items, ttl_field, twin._service.limits)
    return int(proxy._drive(calls))


def local(remote: RemoteStore, operation: ops.Operation[Any]) -> Any:
    """``operation`` run on the store behind the service."""
    if remote.asynchronous:
        return remote.service.run(remote.backend._run(operation))
    return remote.backend._run(operation)


def local_search(
    remote: RemoteStore, user: str = "user-1", namespace: str = "a", **arguments: Any
) -> list[ops.FoundItem]:
    scope = _core.Scope.of(user, AGENT, namespace)
    settings = remote.backend._settings()
    return local(remote, ops.find_items(scope, settings, **_search_arguments(arguments)))  # type: ignore[no-any-return]


def fill(remote: RemoteStore, users: tuple[str, ...] = ("user-1", "user-2")) -> None:
    """In each namespace, the same keys for each user, whose values say whose they are."""
    for user in users:
        for namespace in NAMESPACES:
            items = {
                f"k{n}": {"n": n, "user": user, "ns": namespace, "tags": [namespace, n % 2]}
                for n in range(4)
            }
            remote.proxy(user, AGENT, namespace).set_many(items)
    # another agent of the same user, in the same namespaces: never found either
    remote.proxy("user-1", "agent-b", "a").set_many({"k0": {"n": 0, "user": "agent-b"}})


def _post(remote: RemoteStore, operation: str, body: Any, user: str = "user-1") -> httpx.Response:
    headers = {"authorization": f"Bearer {remote.token(user, AGENT)}"}
    return httpx.post(f"{remote.url}/v1/{operation}", json=body, headers=headers, timeout=30)


SEARCHES = [
    {"within": "agent"},
    {"within": "subtree"},
    {"within": "namespace"},
    {"within": "subtree", "namespace": "a.b"},
    {"within": "agent", "limit": 5, "offset": 3},
    {"within": "subtree", "offset": 10},
    {"within": "agent", "value_filter": {"n": {"$gte": 2}}},
    {"within": "subtree", "value_filter": {"n": 1, "ns": "a.b"}, "limit": 3},
    {"within": "agent", "value_filter": {"tags": ["a.b", 1], "ns": {"$ne": "b"}}},
    {"within": "agent", "keys": ["k3", "k1", "k3", "missing"], "offset": 2, "limit": 6},
    {"within": "namespace", "namespace": "é", "keys": ["k0", "k2"]},
]


def test_a_search_answers_what_the_local_one_does_for_the_token_s_user_only(
    remote: RemoteStore,
) -> None:
    fill(remote)
    for arguments in SEARCHES:
        for user in ("user-1", "user-2"):
            found = remote_search(remote, user, **arguments)
            assert found == local_search(remote, user, **arguments), arguments
            assert found, arguments  # every search above finds something
            assert {entry.item.value["user"] for entry in found} == {user}


def test_a_search_is_refused_before_anything_is_sent(remote: RemoteStore) -> None:
    before = remote.requests
    bad: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"within": "tree"}, ValueError),
        ({"within": "agent", "offset": -1}, ValueError),
        ({"within": "agent", "limit": 0}, ValueError),
        ({"within": "agent", "keys": "k1"}, TypeError),
        ({"within": "agent", "value_filter": {"$where": "sleep(1000)"}}, ValueError),
        ({"within": "agent", "value_filter": {"a.b": 1}}, ValueError),
    ]
    for arguments, error in bad:
        with pytest.raises(error):
            remote_search(remote, **arguments)
    assert remote.requests == before


def test_a_search_past_the_answer_budget_is_paged_and_put_back_together(
    small_answers: RemoteStore,
) -> None:
    for namespace in ("a", "a.b"):
        values = {f"k{n:02}": {"text": str(n) * 1_500} for n in range(6)}
        small_answers.proxy("user-1", AGENT, namespace).set_many(values)
    before = small_answers.requests
    found = remote_search(small_answers, within="subtree", offset=1, limit=10)
    assert found == local_search(small_answers, within="subtree", offset=1, limit=10)
    assert len(found) == 10
    # 10 items of about 1,500 bytes in answers of at most 5,000: several requests
    assert small_answers.requests - before >= 4

    answer = _post(
        small_answers, "find_items", {"namespace": "a", "within": "subtree", "limit": 10}
    )
    assert answer.status_code == 200
    assert len(answer.content) <= 5_000
    document = answer.json()
    assert document["more"] is True
    assert 1 <= len(document["result"]) < 10
    assert [entry["namespace"] for entry in document["result"]] == ["a"] * len(document["result"])


def test_a_search_past_a_page_goes_on_at_the_offset_reached(
    remote: RemoteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(remote, ("user-1",))  # 28 items of the agent
    # pages of 4 on both sides (the client asks for that many, the service refuses more)
    monkeypatch.setattr(_core, "KEY_PAGE_SIZE", 4)
    for arguments in ({"limit": None, "offset": 0}, {"limit": 9, "offset": 5}, {"offset": 26}):
        before = remote.requests
        found = remote_search(remote, within="agent", **arguments)
        expected = local_search(remote, within="agent", **arguments)
        assert found == expected
        # full pages, then one short one (or none when the last was exactly full)
        assert remote.requests - before == len(found) // 4 + 1
    answer = _post(remote, "find_items", {"within": "agent", "limit": 5})
    assert answer.status_code == 413


def test_a_service_that_makes_no_progress_is_a_protocol_error() -> None:
    scope = _core.Scope.of("user-1", AGENT, "a")
    for answer in ({"result": [], "more": True}, {"result": {}}, {"result": [{"key": "k"}]}):
        calls = _protocol.find_items_calls(
            scope,
            within="agent",
            keys=None,
            value_filter=None,
            limit=None,
            offset=0,
            limits=_protocol.Limits(),
        )
        request = next(calls)
        assert request.body == {"namespace": "a", "within": "agent", "limit": 1000, "offset": 0}
        with pytest.raises(DataStoreError, match="not the protocol"):
            calls.send(answer)


BAD_BODIES = [
    {"within": "tree", "limit": 10},
    {"within": "agent", "limit": 10, "offset": -1},
    {"within": "agent", "limit": 0},
    {"within": "agent", "limit": 10, "offset": 1.5},
    {"within": "agent"},
    {"limit": 10},
    {"within": "agent", "limit": 10, "user_id": "user-2"},
    {"within": "agent", "limit": 10, "agent_name": "agent-b"},
    {"within": "agent", "limit": 10, "query": {"userId": "user-2"}},
    {"within": "agent", "limit": 10, "filter": {"$where": "sleep(1000)"}},
    {"within": "agent", "limit": 10, "filter": {"$or": [{"user": "user-2"}]}},
    {"within": "agent", "limit": 10, "filter": {"a.b": 1}},
    {"within": "agent", "limit": 10, "filter": {"n": {"$regex": ".*"}}},
    {"within": "agent", "limit": 10, "filter": "n"},
    {"within": "agent", "limit": 10, "keys": [{"$gt": ""}]},
    {"within": "namespace", "limit": 10, "namespace": {"$ne": None}},
]


def test_a_bad_search_is_refused_as_bad_input(remote: RemoteStore) -> None:
    remote.proxy("user-2", AGENT, "a").set("k", {"user": "user-2"})
    for body in BAD_BODIES:
        answer = _post(remote, "find_items", body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["type"] in ("TypeError", "ValueError")
        assert "user-2" not in answer.text


# ------------------------------------------------------------------------ refresh_expiry


def _expiring(remote: RemoteStore, user: str, ttl_ms: int = 60_000) -> None:
    """Items k0..k2 in namespaces a and b that expire in ``ttl_ms`` and store that length."""
    for namespace in ("a", "b"):
        items = {f"k{n}": {"user": user} for n in range(3)}
        ttl = timedelta(milliseconds=ttl_ms)
        remote.proxy(user, AGENT, namespace).set_many(items, metadata={"ttl": ttl_ms}, ttl=ttl)


def _expiries(remote: RemoteStore, user: str) -> dict[tuple[str, str], Any]:
    found = local_search(remote, user, within="agent")
    return {(entry.namespace, entry.item.key): entry.item.expiresAt for entry in found}


def test_a_refresh_restarts_the_expiry_of_the_token_s_user_s_items_only(
    remote: RemoteStore,
) -> None:
    _expiring(remote, "user-1")
    _expiring(remote, "user-2")
    remote.clock.advance(30)  # type: ignore[attr-defined]
    before = _expiries(remote, "user-1")
    items = [("a", "k0"), ("b", "k2"), ("a", "k0"), ("a", "missing")]
    assert remote_refresh(remote, items, user="user-2") == 2
    assert _expiries(remote, "user-1") == before  # the same items of user-1: untouched
    moved = _expiries(remote, "user-2")
    now = remote.now()
    for pair in (("a", "k0"), ("b", "k2")):
        # the store keeps milliseconds
        assert abs(moved[pair] - (now + timedelta(seconds=60))) < timedelta(seconds=1)
    assert moved[("a", "k1")] == before[("a", "k1")]  # not asked: untouched
    # idempotent: sending it again only moves the expiry to now + its length again
    assert remote_refresh(remote, items, user="user-2") == 2
    assert remote_refresh(remote, [], user="user-2") == 0


def test_a_refresh_of_more_items_than_a_batch_is_split(small_batches: RemoteStore) -> None:
    _expiring(small_batches, "user-1")
    items = [(namespace, f"k{n}") for namespace in ("a", "b") for n in range(3)]
    answer = _post(small_batches, "refresh_expiry", {"items": items[:3], "ttl_field": "ttl"})
    assert answer.status_code == 413
    assert answer.json()["error"]["limits"]["max_batch"] == 2
    before = small_batches.requests
    assert remote_refresh(small_batches, items) == 6
    assert small_batches.requests - before >= 3


def test_a_search_of_more_keys_than_a_batch_is_split(small_batches: RemoteStore) -> None:
    fill(small_batches, ("user-1",))
    keys = ["k3", "k0", "k2", "missing", "k1"]
    answer = _post(small_batches, "find_items", {"within": "agent", "limit": 10, "keys": keys})
    assert answer.status_code == 413
    for arguments in ({}, {"offset": 5, "limit": 7}, {"offset": 27}):
        found = remote_search(small_batches, within="subtree", keys=keys, **arguments)
        assert found == local_search(small_batches, within="subtree", keys=keys, **arguments)


BAD_REFRESHES = [
    {"items": [["a", "k0"]]},
    {"ttl_field": "ttl"},
    {"items": [["a", "k0"]], "ttl_field": "a.b"},
    {"items": [["a", "k0"]], "ttl_field": "$ttl"},
    {"items": [["a"]], "ttl_field": "ttl"},
    {"items": [[1, "k0"]], "ttl_field": "ttl"},
    {"items": [["a", {"$gt": ""}]], "ttl_field": "ttl"},
    {"items": {"a": "k0"}, "ttl_field": "ttl"},
    {"items": [["a", "k0"]], "ttl_field": "ttl", "user_id": "user-2"},
]


def test_a_bad_refresh_is_refused_as_bad_input(remote: RemoteStore) -> None:
    _expiring(remote, "user-1")
    before = _expiries(remote, "user-1")
    remote.clock.advance(30)  # type: ignore[attr-defined]
    for body in BAD_REFRESHES:
        answer = _post(remote, "refresh_expiry", body)
        assert answer.status_code == 400, (body, answer.text)
    assert _expiries(remote, "user-1") == before
