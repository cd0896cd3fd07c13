"""The package's own nesting limit (``_codec.MAX_VALUE_DEPTH``): a value or metadata value
nested exactly that deep round-trips through every backend, the store service's body parsing
and answer encoding included; one level deeper is ``TypeError`` before anything is sent. The
limit is a constant, so the same on every Python: ``scripts/compat.sh`` runs these tests
under each Python from 3.10 to 3.13."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import agent_datastore
from agent_datastore import AgentDataStoreProxy, DataStore, _codec
from agent_datastore._codec import MAX_VALUE_DEPTH
from agent_datastore._serving import FAST_PARSE_VALUES, LARGE_ANSWER_BYTES

from .helpers import snapshot
from .service import RemoteStore, ServiceThread

LIMIT = MAX_VALUE_DEPTH


def nested(depth: int, leaf: Any = "bottom", awkward: bool = False) -> Any:
    """Lists and dicts in turn, ``depth`` of them around ``leaf``; ``awkward`` names the
    dicts' keys so that they are stored in the tagged dict form (three BSON levels each)."""
    value: Any = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"$d.x" if awkward else "d": value}
    return value


def depth_of(value: Any) -> int:
    """Lists and dicts on the deepest path, counted without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        node, above = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, above + 1)
            stack.extend((child, above + 1) for child in _children(node))
    return deepest


def _children(node: dict[str, Any] | list[Any]) -> list[Any]:
    return list(node.values()) if isinstance(node, dict) else node


def test_the_limit_is_counted_as_documented() -> None:
    assert [depth_of(v) for v in (1, "a", [], {"a": 1}, {"a": [1]}, [[], [[]]])] == [
        0,
        0,
        1,
        1,
        2,
        3,
    ]
    assert depth_of(nested(LIMIT)) == LIMIT
    assert LIMIT == 400


def _requests(store: Any) -> int | None:
    """Requests a remote store's service received; None for a store without one."""
    return store.requests if isinstance(store, RemoteStore) else None


@pytest.mark.parametrize("awkward", [False, True], ids=["plain", "tagged"])
def test_a_value_at_the_limit_round_trips(data_store: AgentDataStoreProxy, awkward: bool) -> None:
    value = nested(LIMIT, awkward=awkward)
    data_store.set("deep", value, metadata={"m": value})
    assert data_store.get("deep") == value
    item = data_store.get_item("deep")
    assert item is not None
    assert (item.value, item.metadata) == (value, {"m": value})
    assert data_store.set_many({"a": value, "b": 1}, metadata={"m": value}) == 2
    assert data_store.get_many(["a", "b"]) == {"a": value, "b": 1}
    (listed,) = [info for info in data_store.list_items() if info.key == "a"]
    assert listed.metadata == {"m": value}


def test_a_large_value_at_the_limit_round_trips(data_store: AgentDataStoreProxy) -> None:
    # over LARGE_ANSWER_BYTES, the service encodes the answer as Python code in a thread
    value = nested(LIMIT, leaf="x" * (LARGE_ANSWER_BYTES + 1))
    data_store.set("deep", value)
    assert data_store.get("deep") == value
    assert data_store.get_many(["deep"]) == {"deep": value}


def _set(proxy: AgentDataStoreProxy, value: Any) -> Any:
    return proxy.set("k", value)


def _set_metadata(proxy: AgentDataStoreProxy, value: Any) -> Any:
    return proxy.set("k", 1, metadata={"m": value})


def _set_many(proxy: AgentDataStoreProxy, value: Any) -> Any:
    return proxy.set_many({"first": 1, "k": value})


def _set_many_metadata(proxy: AgentDataStoreProxy, value: Any) -> Any:
    return proxy.set_many({"first": 1}, metadata={"m": value})


@pytest.mark.parametrize("call", [_set, _set_metadata, _set_many, _set_many_metadata])
@pytest.mark.parametrize("awkward", [False, True], ids=["plain", "tagged"])
def test_one_level_past_the_limit_is_refused_before_anything_is_sent(
    data_store: AgentDataStoreProxy,
    store: DataStore,
    call: Callable[[AgentDataStoreProxy, Any], Any],
    awkward: bool,
) -> None:
    data_store.set("k", "before")
    before, requests = snapshot(store), _requests(store)
    with pytest.raises(TypeError, match=rf"nested too deeply: more than {LIMIT} levels"):
        call(data_store, nested(LIMIT + 1, awkward=awkward))
    assert snapshot(store) == before
    assert _requests(store) == requests  # a remote proxy checked it before sending


def test_one_level_past_the_limit_inside_a_shared_value_is_refused(
    data_store: AgentDataStoreProxy,
) -> None:
    # one list in 400 places at once, ending one level too deep only along some paths
    shared: Any = "leaf"
    for _ in range(LIMIT - 1):
        shared = [shared, 1]
    data_store.set("ok", [shared, shared])
    with pytest.raises(TypeError, match="nested too deeply"):
        data_store.set("k", [shared, [shared]])
    assert data_store.get("k") is None


@pytest.mark.parametrize("backend", ["remote", "remote-async"])
def test_the_service_parses_a_body_at_the_limit_on_every_path(
    service: ServiceThread, backend: str
) -> None:
    """Small bodies are parsed by json.loads on the event loop, larger ones in a thread, and
    those with many values by the pure-Python scanner, two frames a level: each reads a
    value at the limit in a body that nests it two levels deeper."""
    connect = (
        agent_datastore.connect_async if backend == "remote-async" else agent_datastore.connect
    )
    with RemoteStore(service, connect("mongomock://")) as store:
        value = nested(LIMIT)
        many = [0] * (FAST_PARSE_VALUES + 1)
        bodies = {
            "small": {"items": {"deep": value}, "metadata": {"m": value}},
            "many values": {"items": {"deep": value, "many": many}, "metadata": {"m": value}},
        }
        for label, body in bodies.items():
            answer = _post(store, "set_many", json.dumps(body))
            assert answer.status_code == 200, (label, answer.text)
            proxy = store.proxy("user-1", "agent-a")
            assert proxy.get("deep") == value
            item = proxy.get_item("deep")
            assert item is not None
            assert item.metadata == {"m": value}
            proxy.clear()


@pytest.mark.parametrize(
    ("depth", "error"),
    [
        # parsed, then refused by the store's own rule
        (LIMIT + 1, "TypeError"),
        # past what the service's JSON parser reads at all, on any Python
        (100_000, "ValueError"),
    ],
)
def test_the_service_refuses_a_body_past_the_limit(
    service: ServiceThread, depth: int, error: str
) -> None:
    with RemoteStore(service, agent_datastore.connect("mongomock://")) as store:
        for filler in ([], [0] * (FAST_PARSE_VALUES + 1)):  # each parse path
            content = (
                '{"key":"k","metadata":{"filler":'
                + json.dumps(filler)
                + '},"value":'
                + "[" * depth
                + "]" * depth
                + "}"
            )
            answer = _post(store, "set", content)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["type"] == error
            assert "nested too deeply" in answer.json()["error"]["message"]
        assert store.proxy("user-1", "agent-a").get("k") is None


def _post(store: RemoteStore, operation: str, content: str) -> httpx.Response:
    headers = {
        "authorization": f"Bearer {store.token('user-1', 'agent-a')}",
        "content-type": "application/json",
    }
    return httpx.post(f"{store.url}/v1/{operation}", content=content, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: nested(90), "from this deep a call"),
        (lambda: nested(LIMIT + 1), rf"more than {LIMIT} levels"),
        (lambda: _cyclic(), "Circular reference"),
    ],
    ids=["within-the-limit", "past-the-limit", "cyclic"],
)
def test_a_caller_without_stack_for_the_value_gets_a_type_error_saying_why(
    build: Callable[[], Any], message: str
) -> None:
    """The encoder recurses along the value's structured part: called with little stack left,
    it runs out before the value does, and the error says whether the value is at fault."""
    value = build()
    frames = len(inspect.stack())
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(frames + 60)  # room for the call, not for 90 levels of the value
    try:
        with pytest.raises(TypeError, match=message):
            _codec.encode(value, 2)
    finally:
        sys.setrecursionlimit(previous)


def _cyclic() -> Any:
    loop: list[Any] = []
    loop.append(loop)
    return {"a": loop}
