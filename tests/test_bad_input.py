"""Every bad input gets its documented error and leaves the store byte-for-byte unchanged."""

from __future__ import annotations

import datetime
import decimal
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agent_datastore import (
    AgentDataStoreProxy,
    AsyncRemoteDataStoreProxy,
    DataStore,
    RemoteDataStoreProxy,
    issue_token,
)
from agent_datastore._codec import MAX_VALUE_DEPTH

from .helpers import snapshot
from .service import SECRET
from .twins import unwrapped

Call = Callable[[AgentDataStoreProxy], Any]


def _cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    value["self"] = {"inner": value}
    return value


def _too_deep() -> Any:
    value: Any = 0
    for _ in range(5000):
        value = [value]
    return value


def _past_the_nesting_limit() -> Any:
    value: Any = 0
    for _ in range(MAX_VALUE_DEPTH + 1):
        value = [value]
    return value


BAD_VALUES: list[tuple[str, Callable[[], Any]]] = [
    ("object", object),
    ("set", lambda: {1, 2}),
    ("bytes", lambda: b"raw"),
    ("bytearray", lambda: bytearray(b"x")),
    ("decimal", lambda: decimal.Decimal("1.5")),
    ("datetime", lambda: datetime.datetime(2026, 1, 1)),
    ("date", lambda: datetime.date(2026, 1, 1)),
    ("uuid", uuid.uuid4),
    ("complex", lambda: 1j),
    ("nan", lambda: math.nan),
    ("inf", lambda: math.inf),
    ("-inf", lambda: -math.inf),
    ("nested nan", lambda: {"a": [1, {"b": math.nan}]}),
    ("nan dict key", lambda: {math.nan: 1}),
    ("inf dict key", lambda: {math.inf: 1}),
    ("tuple dict key", lambda: {(1, 2): "x"}),
    ("frozenset in list", lambda: [frozenset()]),
    ("cyclic list", _cyclic_list),
    ("cyclic dict", _cyclic_dict),
    ("too deep for JSON", _too_deep),
    ("one level past the nesting limit", _past_the_nesting_limit),
    ("lone surrogate", lambda: "a\ud800b"),
    ("lone surrogate dict key", lambda: {"\udfff": 1}),
    ("int beyond Python's digit limit", lambda: 10**5000),
    ("function", lambda: print),
    ("type", lambda: int),
]

BAD_NAMES: list[tuple[Any, type[Exception]]] = [
    (None, TypeError),
    (1, TypeError),
    (1.5, TypeError),
    (b"key", TypeError),
    ({"$ne": None}, TypeError),
    ({"$regex": ".*"}, TypeError),
    (["a"], TypeError),
    (("a",), TypeError),
    ("", ValueError),
    ("\ud800", ValueError),
]

BAD_METADATA: list[tuple[Any, type[Exception]]] = [
    ("version 1", TypeError),
    (["a", 1], TypeError),
    (1, TypeError),
    ({1: "x"}, TypeError),
    ({None: "x"}, TypeError),
    ({"": 1}, ValueError),
    ({"a.b": 1}, ValueError),
    ({"$set": 1}, ValueError),
    ({"$": 1}, ValueError),
    ({"a\x00": 1}, ValueError),
    ({"\ud800": 1}, ValueError),
    ({"x" * 1025: 1}, ValueError),
    ({"ok": object()}, TypeError),
    ({"ok": math.nan}, TypeError),
    ({"ok": {1, 2}}, TypeError),
    ({"ok": _past_the_nesting_limit()}, TypeError),
]


def _scope_for(proxy: Any, user_id: Any, agent_name: Any) -> Any:
    """What a runtime does to reach another user's agent: ask the store for a proxy, or, for
    a remote proxy, issue a token."""
    own = unwrapped(proxy)
    if isinstance(own, (RemoteDataStoreProxy, AsyncRemoteDataStoreProxy)):
        return issue_token(SECRET, user_id, agent_name)
    return own._store.proxy(user_id, agent_name)


def _stable_repr(value: object) -> str:
    """``repr`` without the addresses of objects, so that test ids are the same in every
    process (pytest-xdist's workers must collect the same tests)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _cases() -> list[Any]:
    cases: list[Any] = []
    for label, make in BAD_VALUES:
        cases.append(pytest.param(lambda p, m=make: p.set("k", m()), TypeError, id=f"set {label}"))
        cases.append(
            pytest.param(
                lambda p, m=make: p.set_many({"good": 1, "bad": m()}),
                TypeError,
                id=f"set_many {label}",
            )
        )
    for name, error in BAD_NAMES:
        ids = _stable_repr(name)
        cases += [
            pytest.param(lambda p, n=name: p.get(n), error, id=f"get key {ids}"),
            pytest.param(lambda p, n=name: p.set(n, 1), error, id=f"set key {ids}"),
            pytest.param(lambda p, n=name: p.delete(n), error, id=f"delete key {ids}"),
            pytest.param(lambda p, n=name: p.get_many(["a", n]), error, id=f"get_many key {ids}"),
            pytest.param(
                lambda p, n=name: p.delete_many(["a", n]), error, id=f"delete_many key {ids}"
            ),
            pytest.param(lambda p, n=name: p.use_namespace(n), error, id=f"use_namespace {ids}"),
            pytest.param(
                lambda p, n=name: _scope_for(p, n, "agent"), error, id=f"proxy user_id {ids}"
            ),
            pytest.param(
                lambda p, n=name: _scope_for(p, "user", n), error, id=f"proxy agent_name {ids}"
            ),
        ]
        if isinstance(name, (str, int, float, bytes, type(None))) and name is not None:
            cases.append(
                pytest.param(
                    lambda p, n=name: p.set_many({"good": 1, n: 2}), error, id=f"set_many key {ids}"
                )
            )
    for metadata, error in BAD_METADATA:
        ids = _stable_repr(metadata)[:40]
        cases += [
            pytest.param(lambda p, m=metadata: p.set("k", 1, m), error, id=f"set metadata {ids}"),
            pytest.param(
                lambda p, m=metadata: p.set_many({"a": 1}, metadata=m),
                error,
                id=f"set_many metadata {ids}",
            ),
        ]
    cases += [
        pytest.param(lambda p: p.get("k" * 1025), ValueError, id="key over 1024 bytes"),
        pytest.param(lambda p: p.set("é" * 513, 1), ValueError, id="key over 1024 UTF-8 bytes"),
        pytest.param(lambda p: p.use_namespace("n" * 513), ValueError, id="namespace over 512"),
        pytest.param(lambda p: _scope_for(p, "u" * 513, "a"), ValueError, id="user_id over 512"),
        pytest.param(lambda p: _scope_for(p, "u", "a" * 513), ValueError, id="agent over 512"),
        pytest.param(lambda p: p.get_many("abc"), TypeError, id="get_many of a str"),
        pytest.param(lambda p: p.get_many(b"abc"), TypeError, id="get_many of bytes"),
        pytest.param(lambda p: p.get_many({"a": 1}), TypeError, id="get_many of a dict"),
        pytest.param(lambda p: p.get_many(5), TypeError, id="get_many of an int"),
        pytest.param(lambda p: p.get_many(None), TypeError, id="get_many of None"),
        pytest.param(lambda p: p.delete_many("abc"), TypeError, id="delete_many of a str"),
        pytest.param(lambda p: p.delete_many(b"abc"), TypeError, id="delete_many of bytes"),
        pytest.param(lambda p: p.delete_many({"a": 1}), TypeError, id="delete_many of a dict"),
        pytest.param(lambda p: p.delete_many(5), TypeError, id="delete_many of an int"),
        pytest.param(lambda p: p.delete_many(None), TypeError, id="delete_many of None"),
        pytest.param(lambda p: p.set_many([("a", 1)]), TypeError, id="set_many of pairs"),
        pytest.param(lambda p: p.set_many("ab"), TypeError, id="set_many of a str"),
        pytest.param(lambda p: p.set_many(None), TypeError, id="set_many of None"),
        pytest.param(lambda p: p.list_keys(prefix=5), TypeError, id="prefix int"),
        pytest.param(lambda p: p.list_keys(prefix=b"a"), TypeError, id="prefix bytes"),
        pytest.param(lambda p: p.list_keys(prefix={"$gt": ""}), TypeError, id="prefix dict"),
        pytest.param(lambda p: p.list_keys(prefix="\ud800"), ValueError, id="prefix surrogate"),
        pytest.param(lambda p: p.list_keys(prefix="p" * 1025), ValueError, id="prefix too long"),
        pytest.param(
            lambda p: p.set("big", "x" * (16 * 1024 * 1024)), ValueError, id="oversize value"
        ),
        pytest.param(
            lambda p: p.set("big", 1, metadata={"m": "x" * (16 * 1024 * 1024)}),
            ValueError,
            id="oversize metadata",
        ),
        pytest.param(
            lambda p: p.set_many({"a": 1, "big": "x" * (16 * 1024 * 1024)}),
            ValueError,
            id="set_many with one oversize item",
        ),
        pytest.param(
            lambda p: p.get_many([f"{i:01000d}" for i in range(17_000)]),
            ValueError,
            id="get_many query over 16 MiB",
        ),
        pytest.param(
            lambda p: p.delete_many(["a", *(f"{i:01000d}" for i in range(17_000))]),
            ValueError,
            id="delete_many query over 16 MiB",
        ),
    ]
    return cases


@pytest.fixture
def filled(data_store: AgentDataStoreProxy, store: DataStore) -> AgentDataStoreProxy:
    data_store.set_many({"a": 1, "k": {"v": 1}, "good": "g"}, metadata={"m": 1})
    data_store.use_namespace("other").set("k", 2)
    store.proxy("user-2", "agent-a").set("k", 3)
    return data_store


@pytest.mark.parametrize(("call", "error"), _cases())
def test_bad_input_raises_and_changes_nothing(
    filled: AgentDataStoreProxy, store: DataStore, call: Call, error: type[Exception]
) -> None:
    before = snapshot(store)
    with pytest.raises(error):
        call(filled)
    assert snapshot(store) == before


def test_the_catalogue_is_large() -> None:
    assert len(_cases()) >= 60


def test_errors_name_the_problem(data_store: AgentDataStoreProxy) -> None:
    with pytest.raises(TypeError, match=r"key must be a str, not dict"):
        data_store.get({"$ne": None})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"key must not be empty"):
        data_store.set("", 1)
    with pytest.raises(TypeError, match=r"value for key 'k'.*set is not JSON serializable"):
        data_store.set("k", {1, 2})
    with pytest.raises(TypeError, match="Circular reference"):
        data_store.set("k", _cyclic_list())
    with pytest.raises(TypeError, match="nested too deeply"):
        data_store.set("k", _too_deep())
    with pytest.raises(ValueError, match=r"metadata name 'a\.b'"):
        data_store.set("k", 1, metadata={"a.b": 1})
    with pytest.raises(ValueError, match=r"item 'big' would be a \d+-byte document"):
        data_store.set("big", "x" * (16 * 1024 * 1024))
    with pytest.raises(TypeError, match="keys must be a list of str, not str"):
        data_store.get_many("abc")


def test_a_value_far_over_the_limit_is_refused_before_the_rest_is_encoded(
    data_store: Any,
) -> None:
    # a set at the end would be a TypeError if the encoder ever reached it: the ValueError
    # shows it stopped as soon as the size passed 16 MiB
    strings_then_junk = ["x" * 1_000] * 20_000 + [{1, 2}]
    with pytest.raises(ValueError, match=r"item 'k' would be a document of over \d+ bytes"):
        data_store.set("k", strings_then_junk)
    empty_objects = [{} for _ in range(3_000_000)] + [{1, 2}]
    with pytest.raises(ValueError, match=r"item 'k' would be a document of over \d+ bytes"):
        data_store.set("k", empty_objects)
    nested = [["x" * 1_000] * 1_000] * 20 + [{1, 2}]
    with pytest.raises(ValueError, match=r"over MongoDB's limit"):
        data_store.set("k", {"a": nested})
    with pytest.raises(ValueError, match=r"metadata 'm' is over \d+ bytes"):
        data_store.set("k", 1, metadata={"m": strings_then_junk})
    assert data_store.get("k") is None
