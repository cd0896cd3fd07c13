"""Model-based test: random sequences of every operation, over several users, agents and
namespaces, with awkward JSON values and bad inputs, expiry, compare-and-set and counters,
run against the store and against a plain in-memory model with a clock that only the test
moves. After every step both must agree on every observable result."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import agent_datastore
from agent_datastore import VersionConflict, _codec

from .helpers import MovableClock, snapshot
from .test_values_round_trip import json_values
from .twins import SyncOverAsyncStore

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


ttls = st.sampled_from([None, None, 1, 5, 30])
amounts = st.sampled_from([1, 1, -1, 7, 0, 2**62])


@dataclass(frozen=True)
class Item:
    value: Any  # with JSON semantics
    metadata: dict[str, Any]  # merged
    version: int
    expires: datetime | None


class StoreVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = MovableClock(frozen=True)
        self.store = agent_datastore.connect("mongomock://", clock=self.clock)
        self.model: dict[tuple[str, str, str], dict[str, Item]] = {s: {} for s in SCOPES}

    def teardown(self) -> None:
        self.store.close()

    def proxy(self, scope: tuple[str, str, str]) -> agent_datastore.AgentDataStoreProxy:
        return self.store.proxy(*scope)

    def _now(self) -> datetime:
        return self.store.now()

    def _write(
        self, scope: tuple[str, str, str], key: str, value: Any, meta: Any, ttl: int | None
    ) -> None:
        items = self.model[scope]
        old = items.get(key)
        expires = None if ttl is None else self._now() + timedelta(seconds=ttl)
        items[key] = Item(
            as_json(value),
            {**(old.metadata if old else {}), **{k: as_json(v) for k, v in (meta or {}).items()}},
            old.version + 1 if old else 1,
            expires,
        )

    def _version(self, scope: tuple[str, str, str], key: str) -> int:
        item = self.model[scope].get(key)
        return 0 if item is None else item.version

    @rule(
        scope=scopes,
        key=keys,
        value=json_values,
        meta=metadatas,
        ttl=ttls,
        guess=st.sampled_from([None, None, "current", 0, 1, 2]),
    )
    def set(self, scope: Any, key: str, value: Any, meta: Any, ttl: Any, guess: Any) -> None:
        current = self._version(scope, key)
        if_version = current if guess == "current" else guess
        if if_version is not None and if_version != current:
            before = snapshot(self.store)
            with pytest.raises(VersionConflict) as caught:
                self.proxy(scope).set(key, value, metadata=meta, ttl=ttl, if_version=if_version)
            assert caught.value.current_version == current
            assert snapshot(self.store) == before
            return
        result = self.proxy(scope).set(key, value, metadata=meta, ttl=ttl, if_version=if_version)
        assert result is None
        self._write(scope, key, value, meta, ttl)

    @rule(
        scope=scopes,
        items=st.dictionaries(keys, json_values, max_size=4),
        meta=metadatas,
        ttl=ttls,
    )
    def set_many(self, scope: Any, items: dict[str, Any], meta: Any, ttl: Any) -> None:
        assert self.proxy(scope).set_many(items, metadata=meta, ttl=ttl) == len(items)
        for key, value in items.items():
            self._write(scope, key, value, meta, ttl)

    @rule(scope=scopes, key=keys, amount=amounts)
    def increment(self, scope: Any, key: str, amount: int) -> None:
        items = self.model[scope]
        old = items.get(key)
        proxy = self.proxy(scope)
        if old is None:
            assert proxy.increment(key, amount) == amount
            items[key] = Item(amount, {}, 1, None)
            return
        if isinstance(old.value, bool) or not isinstance(old.value, int):
            with pytest.raises(TypeError):
                proxy.increment(key, amount)
            return
        new = old.value + amount
        if not -(2**63) <= new < 2**63 or not -(2**63) <= old.value < 2**63:
            with pytest.raises(ValueError, match="64-bit"):
                proxy.increment(key, amount)
            return
        assert proxy.increment(key, amount) == new
        items[key] = replace(old, value=new, version=old.version + 1)

    @rule(seconds=st.sampled_from([1, 2, 10, 31]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)
        now = self._now()
        for items in self.model.values():
            for key in [k for k, item in items.items() if item.expires and item.expires <= now]:
                del items[key]  # an expired item is gone

    @rule(scope=scopes, key=keys, default=st.sampled_from([None, "fallback", 0]))
    def get(self, scope: Any, key: str, default: Any) -> None:
        got = self.proxy(scope).get(key, default=default)
        expected = self.model[scope][key].value if key in self.model[scope] else default
        assert spelled(got) == spelled(expected)

    @rule(scope=scopes, key=keys)
    def get_item(self, scope: Any, key: str) -> None:
        item = self.proxy(scope).get_item(key)
        expected = self.model[scope].get(key)
        if expected is None:
            assert item is None
            return
        assert item is not None
        assert spelled(item.value) == spelled(expected.value)
        assert spelled(item.metadata) == spelled(expected.metadata)
        assert (item.version, item.expiresAt) == (expected.version, expected.expires)

    @rule(scope=scopes, wanted=st.lists(keys, max_size=5))
    def get_many(self, scope: Any, wanted: list[str]) -> None:
        got = self.proxy(scope).get_many(wanted)
        items = self.model[scope]
        expected = {k: items[k].value for k in dict.fromkeys(wanted) if k in items}
        assert spelled(list(got.items())) == spelled(list(expected.items()))

    @rule(scope=scopes, key=keys, guess=st.sampled_from([None, None, "current", 0, 1, 2]))
    def delete(self, scope: Any, key: str, guess: Any) -> None:
        current = self._version(scope, key)
        if_version = current if guess == "current" else guess
        if if_version is not None and if_version != current:
            with pytest.raises(VersionConflict) as caught:
                self.proxy(scope).delete(key, if_version=if_version)
            assert caught.value.current_version == current
            return
        deleted = self.proxy(scope).delete(key, if_version=if_version)
        assert deleted is (self.model[scope].pop(key, None) is not None)

    @rule(scope=scopes, unwanted=st.lists(keys, max_size=5))
    def delete_many(self, scope: Any, unwanted: list[str]) -> None:
        deleted = self.proxy(scope).delete_many(unwanted)
        items = self.model[scope]
        assert deleted == sum(items.pop(k, None) is not None for k in dict.fromkeys(unwanted))

    @rule(scope=scopes, prefix=prefixes, limit=st.sampled_from([None, 1, 2, 3]))
    def list_keys(self, scope: Any, prefix: str | None, limit: int | None) -> None:
        expected = sorted(k for k in self.model[scope] if k.startswith(prefix or ""))
        proxy = self.proxy(scope)
        assert list(proxy.iter_keys(prefix=prefix)) == expected
        if limit is None:
            assert proxy.list_keys(prefix=prefix) == expected
            return
        pages: list[str] = []
        start_after = None
        while page := proxy.list_keys(prefix=prefix, limit=limit, start_after=start_after):
            pages += page
            start_after = page[-1]
        assert pages == expected

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
        scope=scopes,
        key=bad_keys,
        operation=st.sampled_from(["get", "set", "delete", "get_many", "delete_many"]),
    )
    def use_a_bad_key(self, scope: Any, key: Any, operation: str) -> None:
        before = snapshot(self.store)
        proxy = self.proxy(scope)
        call = {
            "get": lambda: proxy.get(key),
            "set": lambda: proxy.set(key, 1),
            "delete": lambda: proxy.delete(key),
            "get_many": lambda: proxy.get_many(["a", key]),
            "delete_many": lambda: proxy.delete_many(["a", key]),
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
            assert spelled(got) == spelled({k: item.value for k, item in items.items()})

    @invariant()
    def stored_documents_are_the_model_and_expired_leftovers(self) -> None:
        now = self._now()
        expected = {
            (*scope, key): item
            for scope, items in self.model.items()
            for key, item in items.items()
        }
        for document in self.store.collection.find({}):
            where = (
                document["userId"],
                document["agentName"],
                document["namespace"],
                document["key"],
            )
            item = expected.pop(where, None)
            if item is None:  # not deleted yet, as before a server's TTL monitor runs
                assert document["expiresAt"].replace(tzinfo=now.tzinfo) <= now
                continue
            decoded = {name: _codec.decode(value) for name, value in document["metadata"].items()}
            assert spelled(decoded) == spelled(item.metadata)
            assert document["version"] == item.version
        assert expected == {}


StoreVersusModel.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
test_store_agrees_with_the_model = StoreVersusModel.TestCase


class AsyncTwinVersusModel(StoreVersusModel):
    """The same state machine, through the asynchronous twin."""

    def __init__(self) -> None:
        RuleBasedStateMachine.__init__(self)
        self.clock = MovableClock(frozen=True)
        twin = agent_datastore.connect_async("mongomock://", clock=self.clock)
        self.store = SyncOverAsyncStore(twin, twin.collection)  # type: ignore[assignment]
        self.model = {s: {} for s in SCOPES}


AsyncTwinVersusModel.TestCase.settings = settings(
    max_examples=30, stateful_step_count=40, deadline=None
)
test_async_twin_agrees_with_the_model = AsyncTwinVersusModel.TestCase
