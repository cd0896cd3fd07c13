"""Values are stored with JSON semantics: ``get`` returns ``json.loads(json.dumps(value))``,
including what BSON cannot hold as it is; plain values are stored natively."""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from hypothesis import given
from hypothesis import strategies as st

import agent_datastore
from agent_datastore import AgentDataStoreProxy, DataStore, _codec

from .helpers import documents
from .service import remote_store

AWKWARD_NAMES = ["", ".", "a.b", "$x", "$", "$$", "$set", "\x00", "a\x00b", "__ads__", "_id", "é.$"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_names = st.text() | st.sampled_from(AWKWARD_NAMES)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_names, children, max_size=4)
    ),
    max_leaves=25,
)


def json_semantics(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def assert_same_json(got: Any, value: Any) -> None:
    expected = json_semantics(value)
    assert got == expected
    # equal *and* spelled the same: types (1 vs 1.0), -0.0, key order
    assert json.dumps(got) == json.dumps(expected)


def nested(depth: int, leaf: Any = "bottom") -> Any:
    value: Any = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


def bson_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((bson_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((bson_depth(v) for v in value), default=0)
    return 0


@pytest.fixture(scope="module", params=["embedded", "remote"])
def shared_store(request: pytest.FixtureRequest) -> Any:
    """One store per module, as hypothesis runs many examples per test: the embedded one,
    and the same behind the store service, so that every value also crosses the wire."""
    if request.param == "embedded":
        with agent_datastore.connect("mongomock://") as store:
            yield store
    else:
        yield from remote_store(request.getfixturevalue("service"), clock=None)


@given(value=json_values)
def test_any_json_value_round_trips(shared_store: DataStore, value: Any) -> None:
    data_store = shared_store.proxy("user", "agent", "round-trip")
    data_store.set("k", value)
    assert_same_json(data_store.get("k"), value)
    assert_same_json(data_store.get_many(["k"])["k"], value)


@given(items=st.dictionaries(st.text(min_size=1, max_size=20), json_values, max_size=6))
def test_set_many_round_trips(shared_store: DataStore, items: dict[str, Any]) -> None:
    data_store = shared_store.proxy("user", "agent", "many")
    data_store.clear()
    assert data_store.set_many(items) == len(items)
    got = data_store.get_many(list(items))
    assert list(got) == list(items)
    for key, value in items.items():
        assert_same_json(got[key], value)


@given(
    value=st.dictionaries(
        st.integers()
        | st.booleans()
        | st.none()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        st.integers(),
        max_size=5,
    )
)
def test_non_string_dict_keys_get_their_json_spelling(shared_store: DataStore, value: Any) -> None:
    data_store = shared_store.proxy("user", "agent", "keys")
    data_store.set("k", value)
    assert_same_json(data_store.get("k"), value)


@pytest.mark.parametrize(
    "value",
    [
        {"a.b": 1, "$x": 2, "": 3, "n\x00l": 4, "__ads__": 5, "plain": {"$in": [1]}},
        {"$set": {"value": 1}},
        [{"$where": "1"}, {"x.y": {"z.w": [1, {"$": None}]}}],
        2**63,
        -(2**63) - 1,
        2**63 - 1,
        -(2**63),
        10**300,
        [2**64, {"big": -(10**40)}],
        (1, (2, 3)),
        {3: "int key", 2.5: "float key", True: "bool key", None: "none key"},
        {1: "first", "1": "second"},
        -0.0,
        1e308,
        5e-324,
        "\x00 nul and \U0001f600 emoji",
        {"_id": 1, "userId": "other", "namespace": "x"},
        OrderedDict([("b", 1), ("a", 2)]),
    ],
    ids=repr,
)
def test_awkward_values_round_trip(data_store: AgentDataStoreProxy, value: Any) -> None:
    data_store.set("k", value)
    assert_same_json(data_store.get("k"), value)


def test_dict_subclasses_are_read_through_their_own_items(
    data_store: AgentDataStoreProxy,
) -> None:
    moved = OrderedDict([("a", 1), ("b", 2), ("c", 3)])
    moved.move_to_end("a")

    class Redacting(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            return [(k, v) for k, v in dict.items(self) if k != "secret"]

    value = {"moved": moved, "redacted": Redacting(name="x", secret="hidden")}
    data_store.set("k", value)
    assert_same_json(data_store.get("k"), value)
    assert list(data_store.get("k")["moved"]) == ["b", "c", "a"]
    assert data_store.get("k")["redacted"] == {"name": "x"}


def test_subclasses_are_stored_as_their_json_type(data_store: AgentDataStoreProxy) -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        def __str__(self) -> str:
            return "not this"

    class Ratio(float):
        pass

    value = {"color": Color.RED, "name": Name("ada"), "ratio": Ratio(0.5), Name("k"): [Color.RED]}
    data_store.set("k", value)
    got = data_store.get("k")
    assert_same_json(got, value)
    assert type(got["color"]) is int
    assert type(got["name"]) is str


@pytest.mark.parametrize("depth", [90, 97, 98, 99, 100, 150, 400])
def test_deep_values_round_trip_within_mongodb_nesting_limit(
    data_store: AgentDataStoreProxy, store: DataStore, depth: int
) -> None:
    value = nested(depth)
    data_store.set("deep", value)
    assert_same_json(data_store.get("deep"), value)
    (doc,) = store.collection.find({"key": "deep"}, {"_id": 0})
    assert 1 + bson_depth(doc) <= 100  # the item document is level 1


def test_deep_awkward_values_stay_within_the_nesting_limit(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    value: Any = {"leaf.$": 1}
    for _ in range(120):
        value = {"a.b": value, "$c": [value is None]}
    data_store.set("deep", value, metadata={"m": nested(120)})
    assert_same_json(data_store.get("deep"), value)
    (doc,) = store.collection.find({"key": "deep"}, {"_id": 0})
    assert 1 + bson_depth(doc) <= 100


def test_plain_values_are_stored_natively(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    value = {"score": 95, "tags": ["a", "b"], "nested": {"ok": True, "none": None}, "pi": 3.14}
    data_store.set("k", value, metadata={"version": "1.0", "n": [1, 2]})
    (doc,) = documents(store)
    assert doc["value"] == value
    assert doc["metadata"] == {"version": "1.0", "n": [1, 2]}


def test_only_the_awkward_part_is_encoded(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", {"plain": [1, {"x": 2}], "odd": {"a.b": 1}, "big": 2**64})
    (doc,) = documents(store)
    assert doc["value"] == {
        "plain": [1, {"x": 2}],
        "odd": {"__ads__": "dict", "items": [["a.b", 1]]},
        "big": {"__ads__": "int", "digits": str(2**64)},
    }


def test_awkward_metadata_values_are_encoded_like_values(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", 1, metadata={"odd": {"$x": 2**70}})
    (doc,) = documents(store)
    assert _codec.decode(doc["metadata"]["odd"]) == {"$x": 2**70}


def test_int64_from_the_server_decodes_to_int() -> None:
    decoded = _codec.decode({"a": Int64(7), "b": [Int64(2**40)]})
    assert decoded == {"a": 7, "b": [2**40]}
    assert type(decoded["a"]) is int
    assert type(decoded["b"][0]) is int
    assert type(_codec.decode(Int64(3))) is int


@given(value=json_values)
def test_computed_size_is_the_exact_bson_size(value: Any) -> None:
    stored, size = _codec.encode(value, 2)
    # the payload of field "v" in {"v": stored}: document minus its framing, type and name
    assert size == len(bson.encode({"v": stored})) - 4 - 1 - 1 - 2


def test_largest_document_that_fits_is_accepted_and_one_byte_more_is_refused(
    embedded_data_store: AgentDataStoreProxy,
) -> None:
    data_store = embedded_data_store
    collection = data_store._store.collection
    data_store.set("probe", "x")
    base = len(bson.encode(collection.find_one({"key": "probe"})))
    room = 16 * 1024 * 1024 - base + 1  # bytes the value string may have
    data_store.set("probe", "x" * room)
    assert len(bson.encode(collection.find_one({"key": "probe"}))) == 16 * 1024 * 1024
    with pytest.raises(ValueError, match="'probe'"):
        data_store.set("probe", "x" * (room + 1))
    assert data_store.get("probe") == "x" * room


def test_decoding_an_unknown_tag_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown encoding tag"):
        _codec.decode({"__ads__": "future"})
