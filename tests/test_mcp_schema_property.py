"""The tools' input schemas against the proxy's rules: whatever a schema accepts, the tool
either stores exactly what it was given or refuses with a documented error and writes
nothing. The schema cannot say everything (a key's length is in UTF-8 bytes, a value's size
and depth are the store's), so the proxy's checks come second, never the database's."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import agent_datastore
from agent_datastore.mcp import TOOLS, call_tool

SCHEMAS = {tool.name: Draft202012Validator(tool.input_schema) for tool in TOOLS}
# the errors the descriptions document for an argument, besides the store being unavailable
DOCUMENTED = {"invalid_argument", "version_conflict"}

# texts near the limits: 1,024 bytes for a key, 512 for a namespace, in 1 to 4 bytes a
# character; and the characters MongoDB reads as operators and paths
_NEAR_LIMITS = st.sampled_from(
    ["x" * 1024, "x" * 1025, "é" * 512, "é" * 513, "😀" * 256, "😀" * 257, "n" * 512, "n" * 513]
)
_NAMES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["$", "$x", "a.b", ".", "__ads__", "\x00", "default"]),
    _NEAR_LIMITS,
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # of any size: past 2**53 and past int64 too
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=8,
)
# refused ones, and ones long enough for the item to be read back before it expires
_TTL = st.one_of(
    st.sampled_from([-1, 0, -0.0]),
    st.floats(min_value=60, max_value=4e9),
    st.integers(60, 10**10),
)
_VERSION = st.one_of(st.integers(-1, 3), st.integers(2**63 - 2, 2**63))


def _or_as_float(integers: Any) -> Any:
    """``integers``, some as the whole-number float JSON Schema also calls an integer (1.0,
    1e0), some as booleans (which it does not), and a few floats that are not whole."""
    return st.one_of(
        integers,
        integers.filter(lambda number: abs(number) <= 2**70).map(float),
        st.booleans(),
        st.sampled_from([0.5, -1.5, 2.0**63, float(2**63 - 1024)]),
    )


def _arguments(required: dict[str, Any], optional: dict[str, Any]) -> Any:
    return st.fixed_dictionaries(required, optional={"namespace": _NAMES, **optional})


ARGUMENTS = {
    "set": _arguments(
        {"key": _NAMES, "value": _VALUES},
        {
            "metadata": st.dictionaries(_NAMES, _VALUES, max_size=2),
            "ttl": _TTL,
            "if_version": _or_as_float(_VERSION),
        },
    ),
    "set_many": _arguments(
        {"items": st.dictionaries(_NAMES, _VALUES, max_size=3)},
        {"metadata": st.dictionaries(_NAMES, _VALUES, max_size=2), "ttl": _TTL},
    ),
    "increment": _arguments(
        {"key": _NAMES},
        {"amount": _or_as_float(st.integers() | st.sampled_from([2**63 - 1, -(2**63)]))},
    ),
    "delete_many": _arguments({"keys": st.lists(_NAMES, max_size=3)}, {}),
    "get_many": _arguments({"keys": st.lists(_NAMES, max_size=3)}, {}),
    "list_keys": _arguments(
        {},
        {"prefix": _NAMES, "start_after": _NAMES, "limit": _or_as_float(st.integers(0, 1001))},
    ),
}


def _exactly(value: Any) -> str:
    """A spelling that tells 1 from 1.0 and True, as equality does not."""
    return json.dumps(value, sort_keys=True)


async def _everything(store: agent_datastore.AsyncDataStore) -> list[tuple[str, str, str]]:
    proxy = store.proxy("user-1", "agent-a")
    found = []
    for namespace in await proxy.list_namespaces():
        scoped = proxy.use_namespace(namespace)
        keys = await scoped.list_keys()
        for key, value in (await scoped.get_many(keys)).items():
            found.append((namespace, key, _exactly(value)))
    return found


# The integer arguments, and what each is when given as a whole-number float: the same.
_INTEGER_ARGUMENTS = ("if_version", "amount", "limit")


def _given_as(kind: type, arguments: dict[str, Any]) -> bool:
    """Whether an integer argument is given as a ``kind`` (1.0 == 1 == True: types tell)."""
    return any(type(arguments.get(name)) is kind for name in _INTEGER_ARGUMENTS)


def _as_integers(arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        name: int(value) if name in _INTEGER_ARGUMENTS and type(value) is float else value
        for name, value in arguments.items()
    }


async def _outcome(name: str, arguments: dict[str, Any]) -> Any:
    async with agent_datastore.connect_async("mongomock://") as store:
        proxy = store.proxy("user-1", "agent-a")
        await proxy.use_namespace("default").set("existing", 1)
        result = await call_tool(proxy, name, arguments)
        return result.is_error, result.structured_content, await _everything(store)


def _booleans_as_integers(arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        name: int(value) if name in _INTEGER_ARGUMENTS and type(value) is bool else value
        for name, value in arguments.items()
    }


async def _check_a_boolean_is_refused(name: str, arguments: dict[str, Any]) -> None:
    """A boolean is no integer to JSON Schema (nor to the proxy): refused, nothing written."""
    erring, content, everything = await _outcome(name, arguments)
    assert erring, arguments
    assert content["error"] == "invalid_argument"
    assert everything == [("default", "existing", "1")]
    if SCHEMAS[name].is_valid(_booleans_as_integers(arguments)):  # the boolean alone is wrong
        assert "is not of type 'integer'" in content["message"]


async def _check(name: str, arguments: dict[str, Any]) -> None:
    if _given_as(float, arguments):
        # a whole-number float the schema accepts does what its integer does, to the letter
        # of the answer
        outcome = await _outcome(name, arguments)
        assert _exactly(outcome) == _exactly(await _outcome(name, _as_integers(arguments)))
    async with agent_datastore.connect_async("mongomock://") as store:
        proxy = store.proxy("user-1", "agent-a")
        await proxy.use_namespace("default").set("existing", 1)
        before = await _everything(store)
        result = await call_tool(proxy, name, arguments)
        content = result.structured_content
        assert content is not None
        if result.is_error:
            assert content["error"] in DOCUMENTED, content
            assert await _everything(store) == before  # refused: nothing written
            return
        scoped = proxy.use_namespace(arguments.get("namespace", "default"))
        if name == "set":
            item = await scoped.get_item(arguments["key"])
            assert item is not None
            assert _exactly(item.value) == _exactly(arguments["value"])
            for metadata_name, value in (arguments.get("metadata") or {}).items():
                assert _exactly(item.metadata[metadata_name]) == _exactly(value)
        elif name == "set_many":
            stored = await scoped.get_many(list(arguments["items"]))
            assert _exactly(stored) == _exactly(arguments["items"])
            assert content == {"written": len(arguments["items"])}
        elif name == "increment":
            assert await scoped.get(arguments["key"]) == content["value"]


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
@settings(max_examples=40, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_what_a_schema_accepts_is_stored_exactly_or_refused_as_documented(
    name: str, data: Any
) -> None:
    arguments = data.draw(ARGUMENTS[name], label="arguments")
    if _given_as(bool, arguments):
        asyncio.run(_check_a_boolean_is_refused(name, arguments))
        return
    assume(SCHEMAS[name].is_valid(arguments))
    asyncio.run(_check(name, arguments))


def test_the_schemas_refuse_what_they_state() -> None:
    # a few of the limits the schemas state, so that a schema that accepts everything fails
    assert not SCHEMAS["set"].is_valid({"key": "k", "value": 1, "user_id": "other"})
    assert not SCHEMAS["set"].is_valid({"key": "", "value": 1})
    assert not SCHEMAS["set"].is_valid({"key": "x" * 1025, "value": 1})
    assert not SCHEMAS["set"].is_valid({"key": "k", "value": 1, "metadata": {"$x": 1}})
    assert not SCHEMAS["set"].is_valid({"key": "k", "value": 1, "ttl": 0})
    assert not SCHEMAS["increment"].is_valid({"key": "k", "amount": 2**63})
    assert not SCHEMAS["list_keys"].is_valid({"limit": 1001})
    assert not SCHEMAS["get_many"].is_valid({"keys": ["k"] * 1001})
    assert not SCHEMAS["get"].is_valid({"key": "k", "namespace": "n" * 513})
