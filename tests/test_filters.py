"""``_filters.value_query``: the exact query of representative LangGraph filters, what it
refuses, and, run on stored items, the same matches as LangGraph's ``InMemoryStore`` (its own
``_compare_values``) outside the documented differences, which are checked by name."""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent_datastore
from agent_datastore import DataStore
from agent_datastore._codec import TAG, encode
from agent_datastore._embedded import is_fake_collection
from agent_datastore._filters import (
    MAX_FILTER_BYTES,
    MAX_FILTER_CONDITIONS,
    MAX_FILTER_DEPTH,
    value_query,
)

from .helpers import MONGODB_URI, REAL_SERVER_SKIP

USER, AGENT = "user-1", "agent-a"

OBJECT = {"$type": "object", "$not": {"$type": "array"}}
NOT_ARRAY = {"$not": {"$type": "array"}}


def guards(path: str) -> list[dict[str, Any]]:
    """The clauses of a subset match on ``path``: a document, not an array, not tagged."""
    return [{path: OBJECT}, {f"{path}.{TAG}": {"$exists": False}}]


# -- exact translations


@pytest.mark.parametrize("empty", [None, {}])
def test_no_filter_is_no_condition(empty: Any) -> None:
    assert value_query(empty) == {}


def test_scalars_are_equalities_that_no_array_satisfies() -> None:
    assert value_query({"status": "active", "n": 1, "x": 2.5, "ok": True, "gone": None}) == {
        "$and": [
            *guards("value"),
            {"value.status": {"$eq": "active", **NOT_ARRAY}},
            {"value.n": {"$eq": 1, **NOT_ARRAY}},
            {"value.x": {"$eq": 2.5, **NOT_ARRAY}},
            {"value.ok": {"$eq": True, **NOT_ARRAY}},
            {"value.gone": {"$eq": None, **NOT_ARRAY}},
        ]
    }


def test_a_dict_is_a_subset_match_on_a_plain_document() -> None:
    assert value_query({"a": {"b": {"c": "x"}, "d": {}}}) == {
        "$and": [
            *guards("value"),
            *guards("value.a"),
            *guards("value.a.b"),
            {"value.a.b.c": {"$eq": "x", **NOT_ARRAY}},
            *guards("value.a.d"),
        ]
    }


def test_operators() -> None:
    query = value_query(
        {
            "score": {"$gte": 3, "$lt": 4.5},
            "rank": {"$gt": "2.5", "$lte": True},
            "color": {"$eq": "red", "$ne": None},
        }
    )
    assert query == {
        "$and": [
            *guards("value"),
            {"value.score": {"$gte": 3, **NOT_ARRAY}},
            {"value.score": {"$lt": 4.5, **NOT_ARRAY}},
            # the bound converted as InMemoryStore's float() converts it
            {"value.rank": {"$gt": 2.5, **NOT_ARRAY}},
            {"value.rank": {"$lte": 1, **NOT_ARRAY}},
            {"value.color": {"$eq": "red", **NOT_ARRAY}},
            {"$nor": [{"value.color": {"$eq": None, **NOT_ARRAY}}]},
        ]
    }
    bound = query["$and"][5]["value.rank"]["$lte"]
    assert type(bound) is int  # not True: BSON's comparison operators bracket by type


def test_lists_are_compared_whole_as_literals() -> None:
    assert value_query({"tags": ["$x", 1, ("a", [None])], "t": {"$ne": []}}) == {
        "$and": [
            *guards("value"),
            {"$expr": {"$eq": ["$value.tags", {"$literal": ["$x", 1, ["a", [None]]]}]}},
            {"$expr": {"$ne": ["$value.t", {"$literal": []}]}},
        ]
    }


def test_an_integer_bound_is_kept_exact() -> None:
    query = value_query({"n": {"$gt": 2**53 + 1}})
    assert query["$and"][-1] == {"value.n": {"$gt": 2**53 + 1, **NOT_ARRAY}}


def test_field_names_that_look_like_indexes_stay_field_names() -> None:
    # a parent is always a document (guarded), so "0" can only name a field
    assert value_query({"0": {"1": 2}})["$and"][-1] == {"value.0.1": {"$eq": 2, **NOT_ARRAY}}


def test_subclasses_are_sent_as_their_json_base_type() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    query = value_query({"a": Text("x"), "b": Number(3)})
    values = [clause[path]["$eq"] for clause in query["$and"][2:] for path in clause]
    assert values == ["x", 3]
    assert [type(value) for value in values] == [str, int]


# -- refusals


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ([("a", 1)], TypeError, "a search filter must be a dict or None, not list"),
        ("a", TypeError, "not str"),
        ({1: "a"}, TypeError, "filter[1]: search filter keys must be str, not int"),
        ({"a": {"$eq": 1, 2: 3}}, TypeError, "filter['a'][2]: search filter keys must be str"),
        ({"a": {"b": 1, 2: 3}}, TypeError, "filter['a'][2]: search filter keys must be str"),
        ({"$where": "1"}, ValueError, "filter['$where']: '$where' starts with '$'"),
        ({"$eq": 1}, ValueError, "filter['$eq']: '$eq' is an operator"),
        ({"a.b": 1}, ValueError, "filter['a.b']: 'a.b' holds '.'"),
        ({"a": {"b.c": 1}}, ValueError, "filter['a']['b.c']"),
        ({"": 1}, ValueError, "filter['']: a filter's field names cannot be empty"),
        ({"a\x00": 1}, ValueError, "holds NUL"),
        ({TAG: 1}, ValueError, "is reserved"),
        ({"\ud800": 1}, ValueError, "lone surrogate"),
        ({"a": "\udfff"}, ValueError, "filter['a']: string is not valid Unicode"),
        ({"a": {"$in": [1]}}, ValueError, "filter['a']['$in']: unsupported operator '$in'"),
        ({"a": {"$regex": "x"}}, ValueError, "unsupported operator '$regex'"),
        ({"a": {"$gt": 1, "b": 2}}, ValueError, "filter['a']['b']: a dict of operators cannot"),
        ({"a": {"b": 2, "$gt": 1}}, ValueError, "filter['a']['b']: a dict of operators cannot"),
        ({"a": {"$eq": {"b": 1}}}, ValueError, "filter['a']['$eq']: a dict cannot be compared"),
        ({"a": {"$ne": {}}}, ValueError, "filter['a']['$ne']: a dict cannot be compared"),
        ({"a": [1, {"b": 1}]}, ValueError, "filter['a'][1]: a list in a search filter may"),
        ({"a": {"$eq": [[{}]]}}, ValueError, "filter['a']['$eq'][0][0]"),
        ({"a": math.nan}, ValueError, "filter['a']: nan is not JSON"),
        ({"a": [math.inf]}, ValueError, "filter['a'][0]: inf is not JSON"),
        ({"a": {"$ne": -math.inf}}, ValueError, "-inf is not JSON"),
        ({"a": 2**63}, ValueError, "filter['a']: 9223372036854775808 is beyond int64"),
        ({"a": [-(2**63) - 1]}, ValueError, "beyond int64"),
        ({"a": {"$gt": 2**64}}, ValueError, "beyond int64"),
        ({"a": {"$gt": math.nan}}, ValueError, "$gt needs a finite number, not nan"),
        ({"a": {"$lt": "inf"}}, ValueError, "$lt needs a finite number, not inf"),
        ({"a": {"$gte": "ten"}}, ValueError, "filter['a']['$gte']: $gte needs a number"),
        ({"a": {"$lte": None}}, TypeError, "$lte needs a number, not NoneType"),
        ({"a": {"$gt": [1]}}, TypeError, "$gt needs a number, not list"),
        ({"a": {1, 2}}, TypeError, "filter['a']: a search filter compares JSON values, not set"),
        ({"a": b"x"}, TypeError, "not bytes"),
        ({"a": [object()]}, TypeError, "filter['a'][0]"),
    ],
)
def test_refusals_name_the_offending_part(bad: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        value_query(bad)
    assert message in str(raised.value)


def nested(depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` dicts nested in one another (a filter when depth > 0)."""
    condition = leaf
    for _ in range(depth):
        condition = {"a": condition}
    return condition


def test_depth_is_bounded() -> None:
    value_query(nested(MAX_FILTER_DEPTH, 1))
    value_query(nested(MAX_FILTER_DEPTH - 1, [1]))
    with pytest.raises(ValueError, match=f"at most {MAX_FILTER_DEPTH} dicts and lists"):
        value_query(nested(MAX_FILTER_DEPTH + 1, 1))
    with pytest.raises(ValueError, match="nests too deeply"):
        value_query(nested(MAX_FILTER_DEPTH, [1]))
    with pytest.raises(ValueError, match="nests too deeply"):
        value_query({"a": {"$eq": nested(0, [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]])}})
    cyclic: dict[str, Any] = {}
    cyclic["a"] = cyclic
    with pytest.raises(ValueError, match="nests too deeply"):
        value_query(cyclic)


def test_conditions_are_bounded_before_a_dict_is_walked() -> None:
    names = [f"f{index}" for index in range(MAX_FILTER_CONDITIONS)]
    value_query(dict.fromkeys(names, 1))
    with pytest.raises(ValueError, match=f"at most {MAX_FILTER_CONDITIONS} field names"):
        value_query(dict.fromkeys([*names, "one-more"], 1))
    # field names and operators at every level count together
    with pytest.raises(ValueError, match="at most"):
        value_query(
            {
                "a": dict.fromkeys(names[:60], 1),
                "b": {"$gt": 1, "$lt": 2},
                "c": 1,
                **{name: {"$ne": 1} for name in names[60:96]},
            }
        )
    # a dict of a million keys is refused by its length, whatever is in it (a non-str key
    # would otherwise be a TypeError)
    huge: dict[Any, Any] = dict.fromkeys(range(10**6), 1)
    with pytest.raises(ValueError, match="at most"):
        value_query({"a": huge})


def test_size_is_bounded() -> None:
    value_query({"a": "x" * (MAX_FILTER_BYTES // 2)})
    with pytest.raises(ValueError, match=f"would pass {MAX_FILTER_BYTES} bytes"):
        value_query({"a": "x" * MAX_FILTER_BYTES})
    # a list is refused by its length before its elements are looked at
    with pytest.raises(ValueError, match="too large"):
        value_query({"a": [object()] * (MAX_FILTER_BYTES // 8 + 1)})
    # a long field name counts once per clause below it
    long_name = "n" * 2000
    value_query({long_name: 1})
    with pytest.raises(ValueError, match="too large"):
        value_query({long_name: {f"f{index}": 1 for index in range(40)}})


# -- on stored items


@pytest.fixture(params=["embedded", "mongodb"])
def filter_store(request: pytest.FixtureRequest) -> Iterator[DataStore]:
    """The embedded store, and a real server when MONGODB_URI is set."""
    if request.param == "embedded":
        with agent_datastore.connect("mongomock://") as embedded:
            yield embedded
        return
    if not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    name = f"filters_{uuid.uuid4().hex}"
    with agent_datastore.connect(
        MONGODB_URI, database="agent_datastore_tests", collection=name
    ) as real:
        try:
            yield real
        finally:
            real.collection.drop()


_namespaces = itertools.count()


def matching_keys(store: DataStore, values: dict[str, Any], value_filter: Any) -> set[str]:
    """The keys among ``values``, stored in a namespace of their own, that the query of
    ``value_filter`` finds."""
    namespace = f"ns{next(_namespaces)}"
    store.proxy(USER, AGENT, namespace).set_many(values)
    query = {"userId": USER, "agentName": AGENT, "namespace": namespace}
    query.update(value_query(value_filter))
    return {document["key"] for document in store.collection.find(query, {"key": 1})}


def is_tagged_somewhere(value: Any) -> bool:
    """Whether some part of ``value`` is stored in a tagged form (docs/schema.md)."""
    stored, _ = encode(value, 2)  # the item document is level 1
    parts = [stored]
    while parts:
        part = parts.pop()
        if isinstance(part, dict):
            if TAG in part:
                return True
            parts.extend(part.values())
        elif isinstance(part, list):
            parts.extend(part)
    return False


# (value, filter, whether it matches), where InMemoryStore agrees
AGREEMENTS = [
    ({"a": [1]}, {"a": 1}, False),
    ({"a": [[1, 2], 3]}, {"a": [1, 2]}, False),
    ({"a": [1.0, 2]}, {"a": [1, 2]}, True),
    ({"a": [{"b": 1}]}, {"a": {"b": 1}}, False),
    ({"a": "$b", "b": 1}, {"a": ["$b"]}, False),
    ({"a": ["$b"], "b": 1}, {"a": ["$b"]}, True),
    ({"a": ["$b"], "b": "x"}, {"a": {"$ne": ["$b"]}}, False),
    ({}, {"a": None}, True),
    ({"a": None}, {"a": {"$ne": None}}, False),
    ({"a": 5}, {"a": {"b": None}}, False),
    ({"a": {}}, {"a": {"b": None}}, True),
    ({"a": [None]}, {"a": None}, False),
    ({"a": [None]}, {"a": {"$ne": None}}, True),
    ({"a": [1, 2]}, {"a": {"$ne": 1}}, True),
    ({"a": [[1, 2], 3]}, {"a": {"$ne": [1, 2]}}, True),
    ({"a": 1}, {"a": {"$gt": 0, "$lt": "1.5"}}, True),
    ({"0": {"1": 2}}, {"0": {"1": 2}}, True),
    # tagged parts, where a condition does not look inside them
    ({"a": {"b": 1, "$c": 2}}, {"a": {"$ne": 1}}, True),
    ({"a": {"b": 1, "$c": 2}}, {"a": {"$ne": None}}, True),
    ({"a": 2**64}, {"a": {"digits": str(2**64)}}, False),
    ({"a": [2**64]}, {"a": {"$ne": [1]}}, True),
]

# (value, filter, whether it matches), where InMemoryStore differs or raises
DIFFERENCES = [
    # tagged values never match a condition that looks inside them
    ({"a": {"b": 1, "$c": 2}}, {"a": {"b": 1}}, False),
    ({"a": {"b": 1, "$c": 2}}, {"a": {}}, False),
    ({"a": 2**64}, {"a": {"$gt": 0}}, False),
    # ... and a value tagged as a whole matches no filter
    ({"a": 1, "$b": 2}, {"a": 1}, False),
    ({"a": 1, "$b": 2}, {"c": None}, False),
    # range over non-numbers: numbers only, never an error
    ({"a": "2"}, {"a": {"$gt": 1}}, False),
    ({"a": True}, {"a": {"$gte": 0}}, False),
    ({}, {"a": {"$gt": 1}}, False),
    ({"a": None}, {"a": {"$lt": 1}}, False),
    ({"a": [5]}, {"a": {"$gt": 1}}, False),
    # ranges compared exactly, where float() would round
    ({"a": 2**53 + 1}, {"a": {"$gt": 2**53}}, True),
    ({"a": 2**53 + 1}, {"a": {"$gt": float(2**53)}}, True),
    ({"a": 2**60}, {"a": {"$lt": 2**60 + 1}}, True),
]


@pytest.mark.parametrize(("value", "value_filter", "matches"), AGREEMENTS + DIFFERENCES)
def test_matches_on_stored_items(
    filter_store: DataStore, value: Any, value_filter: dict[str, Any], matches: bool
) -> None:
    assert matching_keys(filter_store, {"k": value}, value_filter) == ({"k"} if matches else set())


@pytest.mark.parametrize(("value", "value_filter", "matches"), AGREEMENTS)
def test_in_memory_store_agrees(value: Any, value_filter: dict[str, Any], matches: bool) -> None:
    compare = pytest.importorskip("langgraph.store.memory")._compare_values
    assert in_memory_matches(compare, value, value_filter) is matches


@pytest.mark.parametrize(("value", "value_filter", "matches"), DIFFERENCES)
def test_in_memory_store_differs(value: Any, value_filter: dict[str, Any], matches: bool) -> None:
    compare = pytest.importorskip("langgraph.store.memory")._compare_values
    assert in_memory_matches(compare, value, value_filter) is not matches


@pytest.mark.parametrize("value", [[{"a": 1}], "a", 1, None, []])
def test_values_that_are_not_dicts_match_no_filter(filter_store: DataStore, value: Any) -> None:
    assert matching_keys(filter_store, {"k": value}, {"a": 1}) == set()
    assert matching_keys(filter_store, {"k": value}, {"b": None}) == set()
    assert matching_keys(filter_store, {"k": value}, {}) == {"k"}


def test_bool_vs_number(filter_store: DataStore) -> None:
    """BSON never equates a boolean with a number, where Python has True == 1. The embedded
    store's fake is lenient here (its {$eq: 1} matches true), so only a real server shows it."""
    if is_fake_collection(filter_store.collection):
        pytest.skip("mongomock-ng equates true with 1, which MongoDB never does")
    values = {"number": {"a": 1, "l": [0]}, "boolean": {"a": True, "l": [False]}}
    assert matching_keys(filter_store, values, {"a": 1}) == {"number"}
    assert matching_keys(filter_store, values, {"a": True}) == {"boolean"}
    assert matching_keys(filter_store, values, {"a": {"$ne": 1}}) == {"boolean"}
    assert matching_keys(filter_store, values, {"l": [0]}) == {"number"}
    assert matching_keys(filter_store, values, {"l": {"$eq": [False]}}) == {"boolean"}


# -- against InMemoryStore

# Two worlds, so that no boolean is ever compared with a number (see test_bool_vs_number):
# one where scalars are numbers, strings and None, and range operators are used; one where
# they are booleans, strings and None.
NAMES = ["a", "b", "c"]
# stored in a tagged form: dicts with such a key, integers beyond int64
ODD_NAMES = ["$a", "a.b", ""]
BIG = 2**64
# never a numeric string: float() would read it as a number (range over non-numbers)
TEXTS = st.sampled_from(["", "x", "y", "$x", "$a", "a.b"])
# within 2**53, where float() is exact (ranges compared exactly)
NUMBERS = st.integers(-2, 2) | st.sampled_from([0.5, 1.0, -0.0, 2.0, 2**53, -(2**53), 1e300])
RANGES = ["$gt", "$gte", "$lt", "$lte"]


def scalars(world: str) -> st.SearchStrategy[Any]:
    kind = NUMBERS if world == "numbers" else st.booleans()
    return st.none() | TEXTS | kind


def stored_values(world: str, tagged: bool) -> st.SearchStrategy[Any]:
    """JSON values; if ``tagged``, with parts stored in a tagged form, below the top level."""
    leaves = scalars(world) | st.just(BIG) if tagged and world == "numbers" else scalars(world)
    names = st.sampled_from(NAMES + ODD_NAMES[: 3 if tagged else 0])
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
        max_leaves=8,
    )


def filter_lists(world: str) -> st.SearchStrategy[list[Any]]:
    return st.lists(scalars(world) | st.lists(scalars(world), max_size=2), max_size=3)


def operators(world: str) -> st.SearchStrategy[dict[str, Any]]:
    equal = scalars(world) | filter_lists(world)
    bound = NUMBERS | st.sampled_from(["1.5", "-1", True, False])
    operands: dict[str, st.SearchStrategy[Any]] = {"$eq": equal, "$ne": equal}
    if world == "numbers":
        operands.update(dict.fromkeys(RANGES, bound))
    chosen = st.lists(st.sampled_from(sorted(operands)), min_size=1, max_size=2, unique=True)
    return chosen.flatmap(lambda ops: st.fixed_dictionaries({op: operands[op] for op in ops}))


def conditions(world: str) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(world) | filter_lists(world) | operators(world),
        lambda inner: st.dictionaries(st.sampled_from(NAMES), inner, max_size=2),
        max_leaves=5,
    )


def comparable(part: Any) -> bool:
    """Whether a filter may compare ``part`` whole."""
    if isinstance(part, list):
        return all(comparable(item) for item in part)
    return (
        part is None
        or isinstance(part, (str, bool, float))
        or (isinstance(part, int) and abs(part) < 2**63)
    )


@st.composite
def condition_on(draw: Callable[..., Any], part: Any, world: str) -> Any:
    """A condition likely to hold, or almost, on ``part`` of a stored value."""
    if isinstance(part, dict):
        names = sorted(name for name in part if name in NAMES)
        if names and draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
            return {name: draw(condition_on(part[name], world)) for name in chosen}
    elif isinstance(part, list) and part and draw(st.booleans()):
        # a condition on one element, which MongoDB, unlike Python, would try on each element
        return draw(condition_on(draw(st.sampled_from(part)), world))
    elif comparable(part):
        number = isinstance(part, (int, float)) and not isinstance(part, bool)
        how = draw(st.sampled_from(["same", "$eq", "$ne", *(RANGES if number else [])]))
        if how == "same":
            return part
        if how in RANGES:
            steps = [0, -0.5, 0.5] if abs(part) < 2**52 else [0]
            return {how: part + draw(st.sampled_from(steps))}
        return {how: part}
    return draw(conditions(world))


@st.composite
def cases(draw: Callable[..., Any]) -> tuple[list[Any], dict[str, Any]]:
    world = draw(st.sampled_from(["numbers", "booleans"]))
    tagged = draw(st.booleans())
    dicts = st.dictionaries(st.sampled_from(NAMES), stored_values(world, tagged), max_size=3)
    values = draw(st.lists(dicts, min_size=1, max_size=5))
    if draw(st.booleans()):
        source = draw(st.sampled_from(values))
        value_filter = {
            name: draw(condition_on(source.get(name), world))
            for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
        }
    else:
        value_filter = draw(
            st.dictionaries(st.sampled_from(NAMES), conditions(world), min_size=1, max_size=3)
        )
    # now and then a value that is not a dict, which LangGraph never stores
    values += draw(st.lists(stored_values(world, tagged), max_size=1))
    return values, value_filter


def in_memory_matches(
    compare: Callable[[Any, Any], bool], value: dict[str, Any], value_filter: dict[str, Any]
) -> bool | None:
    """Whether InMemoryStore's search keeps ``value``: its own test of each filter field
    (``compare`` is its ``_compare_values``, applied as its ``_filter_items`` does); None
    where it raises."""
    try:
        return all(compare(value.get(name), wanted) for name, wanted in value_filter.items())
    except (TypeError, ValueError):
        return None


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(case=cases())
def test_same_matches_as_in_memory_store(
    filter_store: DataStore, case: tuple[list[Any], dict[str, Any]]
) -> None:
    compare = pytest.importorskip("langgraph.store.memory")._compare_values
    values, value_filter = case
    by_key = {f"k{index}": value for index, value in enumerate(values)}
    found = matching_keys(filter_store, by_key, value_filter)
    for key, value in by_key.items():
        if not isinstance(value, dict):  # never in LangGraph, where values are dicts
            assert key not in found, (value, value_filter)
            continue
        expected = in_memory_matches(compare, value, value_filter)
        if expected is None:
            continue  # InMemoryStore raised: nothing to agree with
        if is_tagged_somewhere(value):
            # tagged values: never a match InMemoryStore would not make
            assert expected or key not in found, (value, value_filter)
        else:
            assert (key in found) == expected, (value, value_filter)
