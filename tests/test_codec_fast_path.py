"""The fast paths for plain values and keys give exactly what the general path gives (the same
stored value, container types and BSON size), and never change an error: whatever they do
not take, the general path encodes or refuses as before."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import bson
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_datastore import _codec, _core

names = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "$x", "a.b", "a\x00b", _codec.TAG, "é", "\ud800", "key"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**63, -(2**64)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["\ud800", "naïve", "日本"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(names, inner, max_size=4),
        st.dictionaries(st.integers(-3, 3), inner, max_size=2),
        st.dictionaries(names, inner, max_size=3).map(OrderedDict),
    ),
    max_leaves=12,
)


def _outcome(encode: Any, value: Any, level: int) -> Any:
    try:
        stored, size = encode(value, level)
    except (TypeError, UnicodeEncodeError) as exc:
        return ("error", type(exc), str(exc))
    return ("ok", _shape(stored), size)


def _shape(value: Any) -> Any:
    """The value with the type of every container and scalar made visible to ``==``."""
    if isinstance(value, dict):
        return (type(value), [(name, _shape(item)) for name, item in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value), [_shape(item) for item in value])
    if isinstance(value, float) and math.isnan(value):
        return (float, "nan")
    return (type(value), value)


def _general(value: Any, level: int) -> Any:
    try:
        return _codec._encode(value, level)
    except RecursionError:  # as encode() reports it
        raise TypeError("too deep") from None
    except UnicodeEncodeError as exc:
        raise TypeError(f"string is not valid Unicode (lone surrogate at {exc.start})") from None


@settings(max_examples=400)
@given(value=values, level=st.sampled_from([2, 3, 96, 97, 98]))
def test_the_fast_path_gives_what_the_general_path_gives(value: Any, level: int) -> None:
    assert _outcome(_codec.encode, value, level) == _outcome(_general, value, level)


@given(value=values)
def test_a_plain_value_is_copied_and_its_size_is_its_bson_size(value: Any) -> None:
    fast = _codec._plain_dict({"v": value}, 2)
    if fast is None:
        return
    stored, size = fast
    assert size == len(bson.encode(stored))
    if isinstance(value, (dict, list)):
        assert stored["v"] is not value  # a snapshot, as the general path makes


def test_values_too_deep_for_the_fast_path_still_become_json_text() -> None:
    deep: Any = "end"
    for _ in range(120):
        deep = [deep]
    stored, _ = _codec.encode(deep, 2)
    assert _codec.decode(stored) == deep


key_lists = st.lists(
    st.one_of(
        st.text(max_size=5),
        st.sampled_from(["k", "k", "", "\ud800", "é", "x" * 1024, "x" * 1025, "é" * 600]),
        st.sampled_from([None, 1, b"k", ["k"]]),
    ),
    max_size=6,
)


def _keys_outcome(keys: Any) -> Any:
    try:
        return ("ok", _core.check_keys(keys))
    except (TypeError, ValueError) as exc:
        return ("error", type(exc), str(exc))


@settings(max_examples=400)
@given(keys=key_lists, as_tuple=st.booleans())
def test_the_fast_key_check_gives_what_the_key_by_key_check_gives(
    keys: list[Any], as_tuple: bool
) -> None:
    given_keys = tuple(keys) if as_tuple else keys
    # the key-by-key check is what check_keys does for any other iterable
    assert _keys_outcome(given_keys) == _keys_outcome(iter(keys))


def test_values_by_key_gives_the_order_asked_whatever_the_order_found() -> None:
    found = [{"key": "a", "value": 1}, {"key": "b", "value": {"__ads__": "int", "digits": "7"}}]
    # all found, in the order asked: the documents' own order, decoded
    assert list(_core.values_by_key([dict(d) for d in found], ["a", "b"]).items()) == [
        ("a", 1),
        ("b", 7),
    ]
    # all found, asked in another order; and one missing
    assert list(_core.values_by_key([dict(d) for d in found], ["b", "a"]).items()) == [
        ("b", 7),
        ("a", 1),
    ]
    assert list(_core.values_by_key([dict(d) for d in found], ["b", "x"]).items()) == [("b", 7)]
