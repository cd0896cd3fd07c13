"""The stored form of every name a MongoDB 4.4 server refuses in a stored document: a name
starting with ``$`` (at any depth, below feature compatibility version 5.0), a dotted name,
an empty name, a name with NUL (which BSON cannot even carry). The fakes store such names as
they are, so a round trip through them proves nothing: these tests look at the document as
written to the collection, and at the value as it goes over the wire, and expect the tagged
``dict`` form of docs/schema.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_datastore import AgentDataStoreProxy, DataStore, _codec

from .wire import WireServer, start_wire_server

TAG = "__ads__"


def pairs(*items: list[Any]) -> dict[str, Any]:
    """The tagged form of a dict whose names cannot be stored as they are."""
    return {TAG: "dict", "items": list(items)}


# (value given to set, value as stored), one row per kind of name and place
STORED_FORMS: dict[str, tuple[Any, Any]] = {
    "dollar-top": ({"$x": 1}, pairs(["$x", 1])),
    "dollar-alone": ({"$": 1}, pairs(["$", 1])),
    "dollar-operator": ({"$set": {"a": 1}}, pairs(["$set", {"a": 1}])),
    "dollar-nested": ({"a": {"b": {"$gt": 1}}}, {"a": {"b": pairs(["$gt", 1])}}),
    "dollar-in-list": ([1, {"$x": 2}], [1, pairs(["$x", 2])]),
    "dollar-in-nested-list": (
        {"l": [[{"$x": {"$y": None}}]]},
        {"l": [[pairs(["$x", pairs(["$y", None])])]]},
    ),
    "dollar-among-plain": ({"a": 1, "$b": 2, "c": 3}, pairs(["a", 1], ["$b", 2], ["c", 3])),
    "dot-top": ({"a.b": 1}, pairs(["a.b", 1])),
    "dot-alone": ({".": "x"}, pairs([".", "x"])),
    "dot-trailing-nested": ({"a": {"b.": True}}, {"a": pairs(["b.", True])}),
    "dot-in-list": ({"l": [{"x.y": [1]}]}, {"l": [pairs(["x.y", [1]])]}),
    "empty-top": ({"": 1}, pairs(["", 1])),
    "empty-nested": ({"a": {"": {"b": 2}}}, {"a": pairs(["", {"b": 2}])}),
    "empty-in-list": ([{"": None}], [pairs(["", None])]),
    "nul-top": ({"a\x00b": 1}, pairs(["a\x00b", 1])),
    "nul-nested": ({"a": {"\x00": "v"}}, {"a": pairs(["\x00", "v"])}),
    "nul-in-list": ([[{"x\x00": 1}]], [[pairs(["x\x00", 1])]]),
    "tag-name": ({TAG: "dict"}, pairs([TAG, "dict"])),
    "inside-tagged": ({"$a": {"b.c": 1}}, pairs(["$a", pairs(["b.c", 1])])),
    # only a leading $ is refused: these names are stored as they are
    "dollar-inside-plain": ({"a$": 1, "é$b": {"c": 2}}, {"a$": 1, "é$b": {"c": 2}}),
}
FORM_IDS = list(STORED_FORMS)
FORMS = list(STORED_FORMS.values())


@pytest.mark.parametrize(("value", "stored"), FORMS, ids=FORM_IDS)
def test_the_codec_gives_the_stored_form(value: Any, stored: Any) -> None:
    assert _codec.encode(value, 2)[0] == stored


# --------------------------------------------------------------- as written, every backend


def stored_document(store: DataStore, key: str) -> dict[str, Any]:
    document = store.collection.find_one({"key": key})
    assert document is not None
    return dict(document)


@pytest.mark.parametrize(("value", "stored"), FORMS, ids=FORM_IDS)
def test_set_writes_the_stored_form(
    store: DataStore, data_store: AgentDataStoreProxy, value: Any, stored: Any
) -> None:
    data_store.set("k", value)
    assert stored_document(store, "k")["value"] == stored


def test_set_many_writes_the_stored_forms(
    store: DataStore, data_store: AgentDataStoreProxy
) -> None:
    data_store.set_many({name: value for name, (value, _) in STORED_FORMS.items()})
    for name, (_, stored) in STORED_FORMS.items():
        assert stored_document(store, name)["value"] == stored, name


def test_set_with_if_version_writes_the_stored_form(
    store: DataStore, data_store: AgentDataStoreProxy
) -> None:
    data_store.set("k", {"$x": {"a.b": [{"": 1}]}}, if_version=0)
    assert stored_document(store, "k")["value"] == pairs(["$x", pairs(["a.b", [pairs(["", 1])]])])


def test_metadata_values_are_written_in_the_stored_form(
    store: DataStore, data_store: AgentDataStoreProxy
) -> None:
    metadata = {name: value for name, (value, _) in STORED_FORMS.items()}
    data_store.set("k", 1, metadata=metadata)
    expected = {name: stored for name, (_, stored) in STORED_FORMS.items()}
    assert stored_document(store, "k")["metadata"] == expected


@pytest.mark.parametrize("name", ["$x", "$", "a.b", ".", "", "a\x00b"])
def test_metadata_names_that_cannot_be_fields_are_refused(
    store: DataStore, data_store: AgentDataStoreProxy, name: str
) -> None:
    """A metadata name becomes a field path, ``metadata.<name>``: no tagged form can hold
    it, so it is refused, and nothing is written."""
    with pytest.raises(ValueError, match="metadata name"):
        data_store.set("k", 1, metadata={name: 1})
    with pytest.raises(ValueError, match="metadata name"):
        data_store.set_many({"k": 1}, metadata={name: 1})
    assert store.collection.find_one({"key": "k"}) is None


# ------------------------------------------------------------------------- over the wire


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def wire_proxy(wire: WireServer) -> Iterator[AgentDataStoreProxy]:
    with wire.connect(ensure_indexes=False) as store:
        wire.take()
        yield store.proxy("user-1", "agent-a", "ns")
    wire.take()


def sent_values(pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    """What a write pipeline's ``$set`` stages give the value and metadata paths, unwrapped
    from the ``if_version`` condition."""
    sent: dict[str, Any] = {}
    for stage in pipeline:
        for path, expression in stage.get("$set", {}).items():
            if path == "value" or path.startswith("metadata."):
                if "$cond" in expression:
                    expression = expression["$cond"][1]
                sent[path] = expression
    return sent


@pytest.mark.parametrize(("value", "stored"), FORMS, ids=FORM_IDS)
def test_set_sends_the_stored_form(
    wire: WireServer, wire_proxy: AgentDataStoreProxy, value: Any, stored: Any
) -> None:
    wire_proxy.set("k", value, metadata={"m": value})
    (command,) = wire.take()
    (statement,) = command["updates"]
    assert sent_values(statement["u"]) == {
        "value": {"$literal": stored},
        "metadata.m": {"$literal": stored},
    }


def test_set_with_if_version_and_set_many_send_the_stored_forms(
    wire: WireServer, wire_proxy: AgentDataStoreProxy
) -> None:
    wire_proxy.set("k", {"$x": 1}, metadata={"m": {"a.b": 2}}, if_version=0)
    (command,) = wire.take()
    assert sent_values(command["update"]) == {
        "value": {"$literal": pairs(["$x", 1])},
        "metadata.m": {"$literal": pairs(["a.b", 2])},
    }
    wire_proxy.set_many({name: value for name, (value, _) in STORED_FORMS.items()})
    statements = [statement for command in wire.take() for statement in command["updates"]]
    sent = {statement["q"]["key"]: sent_values(statement["u"]) for statement in statements}
    assert sent == {
        name: {"value": {"$literal": stored}} for name, (_, stored) in STORED_FORMS.items()
    }


def test_bad_metadata_names_send_nothing(wire: WireServer, wire_proxy: AgentDataStoreProxy) -> None:
    for name in ["$x", "a.b", "", "a\x00b"]:
        with pytest.raises(ValueError, match="metadata name"):
            wire_proxy.set("k", 1, metadata={name: 1})
    assert wire.take() == []
