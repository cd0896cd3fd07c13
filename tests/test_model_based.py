"""Model-based test: random sequences of every operation, over several users, agents and
namespaces, with awkward JSON values and bad inputs, run against the store and against a plain
in-memory model. After every step both must agree on every observable result."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import agent_datastore
from agent_datastore import _codec

from .helpers import snapshot
from .test_values_round_trip import json_values

NAMESPACES = ["default", "ns", "ns:sub", "$ns"]
# Scopes that collide under any sloppy matching: regex syntax, NUL, case, shared prefixes.
SCOPES = [
    ("u1", "agent", "default"),
    ("u1", "agent", "ns"),
    ("u1", "agent", "ns:sub"),
    ("u1", "agent\x00", "default"),
    ("u1.*", "agent", "default"),
    ("U1", "agent", "$ns"),
]
# Mostly a small pool, so that operations meet the same keys again; sometimes anything.
KEYS = ["a", "a.b", "ab", "a\nb", "$gt", "k\x00", "é", "__ads__", "[x]", ".*"]
PREFIXES = ["", "a", "a.", "$", "é", "k\x00", "[", ".*", "a\n"]

scopes = st.sampled_from(SCOPES)
keys = st.sampled_from(KEYS) | st.sampled_from(KEYS) | st.text(min_size=1, max_size=4)
prefixes = st.none() | st.sampled_from(PREFIXES) | st.sampled_from(PREFIXES) | st.text(max_size=2)
metadata_names = st.text(min_size=1, max_size=6).filter(
    lambda n: not n.startswith("$") and "." not in n and "\x00" not in n
)
metadatas = st.none() | st.dictionaries(metadata_names, json_values, max_size=3)
bad_values = st.sampled_from(
    [{1, 2}, b"raw", math.nan, math.inf, object(), [1, {"x": math.nan}], {(1,): 1}, "\ud800"]
)
bad_keys = st.sampled_from([None, 1, b"k", {"$ne": None}, ["a"], "", "x" * 1025, "\udc00"])


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def spelled(value: Any) -> str:
    return json.dumps(value)


Item = tuple[Any, dict[str, Any]]  # value with JSON semantics, merged metadata


class StoreVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = agent_datastore.connect("mongomock://")
        self.model: dict[tuple[str, str, str], dict[str, Item]] = {s: {} for s in SCOPES}

    def teardown(self) -> None:
        self.store.close()

    def proxy(self, scope: tuple[str, str, str]) -> agent_datastore.AgentDataStoreProxy:
        return self.store.proxy(*scope)

    def _write(self, scope: tuple[str, str, str], key: str, value: Any, meta: Any) -> None:
        items = self.model[scope]
        _, old_meta = items.get(key, (None, {}))
        items[key] = (
            as_json(value),
            {**old_meta, **{k: as_json(v) for k, v in (meta or {}).items()}},
        )

    @rule(scope=scopes, key=keys, value=json_values, meta=metadatas)
    def set(self, scope: Any, key: str, value: Any, meta: Any) -> None:
        assert self.proxy(scope).set(key, value, metadata=meta) is None
        self._write(scope, key, value, meta)

    @rule(scope=scopes, items=st.dictionaries(keys, json_values, max_size=4), meta=metadatas)
    def set_many(self, scope: Any, items: dict[str, Any], meta: Any) -> None:
        assert self.proxy(scope).set_many(items, metadata=meta) == len(items)
        for key, value in items.items():
            self._write(scope, key, value, meta)

    @rule(scope=scopes, key=keys, default=st.sampled_from([None, "fallback", 0]))
    def get(self, scope: Any, key: str, default: Any) -> None:
        got = self.proxy(scope).get(key, default=default)
        expected = self.model[scope][key][0] if key in self.model[scope] else default
        assert spelled(got) == spelled(expected)

    @rule(scope=scopes, wanted=st.lists(keys, max_size=5))
    def get_many(self, scope: Any, wanted: list[str]) -> None:
        got = self.proxy(scope).get_many(wanted)
        items = self.model[scope]
        expected = {k: items[k][0] for k in dict.fromkeys(wanted) if k in items}
        assert spelled(list(got.items())) == spelled(list(expected.items()))

    @rule(scope=scopes, key=keys)
    def delete(self, scope: Any, key: str) -> None:
        assert self.proxy(scope).delete(key) is (self.model[scope].pop(key, None) is not None)

    @rule(scope=scopes, prefix=prefixes)
    def list_keys(self, scope: Any, prefix: str | None) -> None:
        expected = sorted(k for k in self.model[scope] if k.startswith(prefix or ""))
        assert self.proxy(scope).list_keys(prefix=prefix) == expected

    @rule(scope=scopes)
    def list_namespaces(self, scope: Any) -> None:
        user, agent, _ = scope
        expected = sorted(
            n for (u, a, n), items in self.model.items() if (u, a) == (user, agent) and items
        )
        assert self.proxy(scope).list_namespaces() == expected

    @rule(scope=scopes, namespace=st.sampled_from(NAMESPACES))
    def use_namespace(self, scope: Any, namespace: str) -> None:
        other = self.proxy(scope).use_namespace(namespace)
        assert (other.user_id, other.agent_name, other.namespace) == (*scope[:2], namespace)

    @precondition(lambda self: any(self.model.values()))
    @rule(scope=scopes)
    def clear(self, scope: Any) -> None:
        assert self.proxy(scope).clear() == len(self.model[scope])
        self.model[scope] = {}

    @rule(scope=scopes, key=keys, value=bad_values, many=st.booleans())
    def set_a_bad_value(self, scope: Any, key: str, value: Any, many: bool) -> None:
        before = snapshot(self.store)
        proxy = self.proxy(scope)
        call = (
            (lambda: proxy.set_many({"fine": 1, key: value}))
            if many
            else (lambda: proxy.set(key, value))
        )
        with pytest.raises(TypeError):
            call()
        assert snapshot(self.store) == before

    @rule(
        scope=scopes, key=bad_keys, operation=st.sampled_from(["get", "set", "delete", "get_many"])
    )
    def use_a_bad_key(self, scope: Any, key: Any, operation: str) -> None:
        before = snapshot(self.store)
        proxy = self.proxy(scope)
        call = {
            "get": lambda: proxy.get(key),
            "set": lambda: proxy.set(key, 1),
            "delete": lambda: proxy.delete(key),
            "get_many": lambda: proxy.get_many(["a", key]),
        }[operation]
        with pytest.raises((TypeError, ValueError)):
            call()
        assert snapshot(self.store) == before

    @invariant()
    def every_scope_holds_exactly_the_model(self) -> None:
        for scope, items in self.model.items():
            proxy = self.proxy(scope)
            assert proxy.list_keys() == sorted(items)
            got = proxy.get_many(list(items))
            assert spelled(got) == spelled({k: value for k, (value, _) in items.items()})

    @invariant()
    def metadata_is_merged_as_the_model_says(self) -> None:
        stored = {
            (d["userId"], d["agentName"], d["namespace"], d["key"]): d["metadata"]
            for d in self.store.collection.find({})
        }
        expected = {
            (*scope, key): meta
            for scope, items in self.model.items()
            for key, (_, meta) in items.items()
        }
        assert stored.keys() == expected.keys()
        for where, meta in expected.items():
            decoded = {name: _codec.decode(value) for name, value in stored[where].items()}
            assert spelled(decoded) == spelled(meta)


StoreVersusModel.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
test_store_agrees_with_the_model = StoreVersusModel.TestCase
