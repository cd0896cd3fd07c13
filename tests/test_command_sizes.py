"""Every write is checked against the size of the command the server will receive, before
anything is sent: the update pipeline carries more than the stored document (its expressions,
each metadata path again, the if_version guard), so a document within 16 MiB can still make a
statement over what pymongo sends (16 MiB + 16,382 bytes) or the server accepts (16 MiB +
16 KiB). Through a real pymongo client to a wire-protocol test server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import bson
import pytest

from agent_datastore import AgentDataStoreProxy, _core, _protocol
from agent_datastore._core import (
    COMMAND_HEADROOM,
    MAX_COMMAND_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_STATEMENT_BYTES,
    statement_size,
)

from .wire import WireServer, start_wire_server

# What the server accepts as one part of a command: one statement of a document sequence, or
# a command body (BSONObjMaxInternalSize).
SERVER_PART_LIMIT = 16 * 1024 * 1024 + 16 * 1024
# What an update command adds to its statement as its document sequence header: the section's
# size and the name "updates".
SEQUENCE_HEADER = 4 + len(b"updates\x00")

USER, AGENT, NAMESPACE = "user-1", "agent-a", "ns"
SCOPE = _core.Scope.of(USER, AGENT, NAMESPACE)
# Many metadata names: each makes the statement larger than the document by more than its
# share of the document, so these items reach the command limit before the document limit.
MANY_NAMES = {f"name-{index:04d}": index for index in range(600)}


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def proxy(wire: WireServer) -> Iterator[AgentDataStoreProxy]:
    with wire.connect(ensure_indexes=False) as store:
        wire.take()
        yield store.proxy(USER, AGENT, NAMESPACE)
    wire.take()


def names_count(count: int) -> dict[str, int]:
    return {f"name-{index:04d}": index for index in range(count)}


def fitting_length(metadata: dict[str, Any], if_version: int | None) -> int:
    """The length of the longest ASCII string value whose ``set`` statement fits exactly."""
    write = SCOPE.set_write(
        "k", "", _core.check_metadata(metadata), _core.utc_now(), if_version=if_version
    )
    # an ASCII string's payload grows by one byte per character; nothing else changes
    return MAX_STATEMENT_BYTES - statement_size(write)


def received_statement(command: dict[str, Any]) -> dict[str, Any]:
    """The update statement a received ``update`` or ``findAndModify`` stands for."""
    if "update" in command and "updates" in command:
        (statement,) = command["updates"]
        return dict(statement)
    return {
        "q": command["query"],
        "u": command["update"],
        "multi": False,
        "upsert": command["upsert"],
        "collation": command["collation"],
    }


def encoded_size(document: dict[str, Any]) -> int:
    return len(bson.encode(document))


# ------------------------------------------------------------------------------- limits


def test_the_limits_are_pymongos_and_the_servers_less_the_headroom() -> None:
    from pymongo import message

    assert MAX_COMMAND_BYTES == MAX_DOCUMENT_BYTES + message._COMMAND_OVERHEAD
    assert MAX_COMMAND_BYTES < SERVER_PART_LIMIT
    assert MAX_STATEMENT_BYTES == MAX_COMMAND_BYTES - COMMAND_HEADROOM
    # so that an item without metadata, within 16 MiB, needs no measure at all
    assert _core._SURELY_FITS >= MAX_DOCUMENT_BYTES


@pytest.mark.parametrize("ttl", [None, timedelta(days=36_500)])
@pytest.mark.parametrize("if_version", [None, 0, 1, 2**63 - 1])
@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"m": 1},
        {"m" * 1024: None},
        {"é" * 512: "x"},
        {"\U0001f600" * 256: [1, 2]},
        names_count(50),
    ],
    ids=["none", "short", "long-name", "two-byte-name", "four-byte-name", "50-names"],
)
def test_the_cheap_bound_is_never_below_the_exact_statement(
    ttl: timedelta | None, if_version: int | None, metadata: dict[str, Any]
) -> None:
    """The writer measures a statement only when the item's document passes a bound; this is
    the bound, held to the exact size of every kind of statement."""
    scope = _core.Scope.of("u" * 512, "a" * 512, "n" * 512)
    paths, metadata_size = _core.check_metadata(metadata)
    key = "k" * 1024
    write = scope.set_write(
        key, "", (paths, metadata_size), _core.utc_now(), ttl=ttl, if_version=if_version
    )
    _, document_size = scope._encode_item(
        key, "", metadata_size, MAX_DOCUMENT_BYTES, ttl is not None
    )
    bound = (
        document_size
        + _core._PIPELINE_OVERHEAD
        + _core._METADATA_NAME_OVERHEAD * len(paths)
        + metadata_size
    )
    assert statement_size(write) <= bound


@pytest.mark.parametrize("ttl", [None, timedelta(days=36_500)])
def test_increment_and_delete_commands_are_far_below_the_limit(ttl: timedelta | None) -> None:
    """They carry no value and no metadata, so they are not checked: the largest possible
    ones (every name and the key at their longest) are a few kilobytes."""
    scope = _core.Scope.of("u" * 512, "a" * 512, "n" * 512)
    key = "\U0001f600" * 256  # 1,024 bytes
    increment = scope.increment_write(key, -(2**63), _core.utc_now(), ttl)
    assert statement_size(increment) < 8 * 1024
    conditional_delete = {
        **scope.live_item_filter(key, _core.utc_now()),
        **_core.version_query(2**63 - 1),
    }
    assert encoded_size({"q": conditional_delete, "limit": 1}) < 8 * 1024


# ------------------------------------------------------------------- refused, nothing sent


def test_set_over_the_command_limit_is_refused_before_sending(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    value = "x" * (fitting_length(MANY_NAMES, None) + 1)
    # its document is within 16 MiB: only its statement is not
    metadata_size = _core.check_metadata(MANY_NAMES)[1]
    SCOPE.encode_value("k", value, metadata_size, MAX_DOCUMENT_BYTES)
    with pytest.raises(ValueError, match=r"item 'k' would need a \d+-byte update statement"):
        proxy.set("k", value, metadata=MANY_NAMES)
    assert wire.take() == []


def test_set_with_if_version_over_the_command_limit_is_refused_before_sending(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    metadata = names_count(200)
    value = "x" * (fitting_length(metadata, 0) + 1)
    # without the guard, the same item fits
    SCOPE.set_write("k", value, _core.check_metadata(metadata), _core.utc_now())
    with pytest.raises(ValueError, match=r"item 'k' would need a \d+-byte update statement"):
        proxy.set("k", value, metadata=metadata, if_version=0)
    assert wire.take() == []


SMALL_ITEMS = 3_000
SMALL_VALUE = "s" * (16 * 1024)  # 3,000 of them pass the largest message a server takes


def test_set_many_sends_its_small_items_in_several_commands(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    """The premise of the next test: pymongo splits this batch into sub-batches."""
    items = {f"item-{index}": SMALL_VALUE for index in range(SMALL_ITEMS)}
    assert proxy.set_many(items) == SMALL_ITEMS
    commands = wire.take()
    assert [next(iter(command)) for command in commands] == ["update"] * len(commands)
    assert len(commands) >= 2
    assert sum(len(command["updates"]) for command in commands) == SMALL_ITEMS


def test_set_many_with_its_last_item_over_the_command_limit_sends_nothing(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    items: dict[str, Any] = {f"item-{index}": SMALL_VALUE for index in range(SMALL_ITEMS)}
    items["last"] = "x" * (fitting_length(MANY_NAMES, None) + 1)
    with pytest.raises(ValueError, match=r"item 'last' would need a \d+-byte update statement"):
        proxy.set_many(items, metadata=MANY_NAMES)
    assert wire.take() == []


def test_remote_set_many_checks_the_command_of_every_item_before_any_batch() -> None:
    items: dict[str, Any] = {f"item-{index}": "s" for index in range(SMALL_ITEMS)}
    items["last"] = "x" * (fitting_length(MANY_NAMES, None) + 1)
    limits = _protocol.Limits(max_batch=100, max_body_bytes=1024 * 1024)
    calls = _protocol.set_many_calls(SCOPE, items, MANY_NAMES, None, limits)
    with pytest.raises(ValueError, match=r"item 'last' would need a \d+-byte update statement"):
        next(calls)
    del items["last"]
    calls = _protocol.set_many_calls(SCOPE, items, MANY_NAMES, None, limits)
    assert next(calls).operation == "set_many"  # without it, the first batch goes


def test_remote_set_checks_the_command() -> None:
    metadata = names_count(200)
    value = "x" * (fitting_length(metadata, 0) + 1)
    assert _protocol.set_request(SCOPE, "k", value, metadata, None, None).operation == "set"
    with pytest.raises(ValueError, match=r"item 'k' would need a \d+-byte update statement"):
        _protocol.set_request(SCOPE, "k", value, metadata, None, 0)


# ---------------------------------------------------------------------------- the boundary


@pytest.mark.parametrize("names", [600, 1_000])
@pytest.mark.parametrize("if_version", [None, 0])
def test_the_largest_statement_that_fits_is_sent_and_one_byte_more_is_not(
    wire: WireServer, proxy: AgentDataStoreProxy, names: int, if_version: int | None
) -> None:
    """With many metadata names and a near-16-MiB value, the statement that arrives is
    exactly the limit, and so within what pymongo and the server take."""
    metadata = names_count(names)
    length = fitting_length(metadata, if_version)
    proxy.set("k", "x" * length, metadata=metadata, if_version=if_version)
    (command,) = wire.take()
    statement = received_statement(command)
    assert encoded_size(statement) == MAX_STATEMENT_BYTES
    (sent_value,) = [
        stage["$set"]["value"] for stage in statement["u"] if "value" in stage.get("$set", {})
    ]
    assert sent_value == (
        {"$literal": "x" * length}
        if if_version is None
        else {"$cond": ["$__ads_ok", {"$literal": "x" * length}, "$value"]}
    )
    if "updates" in command:
        body = {name: value for name, value in command.items() if name != "updates"}
        whole = encoded_size(body) + SEQUENCE_HEADER + encoded_size(statement)
    else:
        whole = encoded_size(command)
    assert whole <= MAX_COMMAND_BYTES
    assert MAX_COMMAND_BYTES - whole < COMMAND_HEADROOM  # the headroom is not all spent

    with pytest.raises(ValueError, match=r"item 'k' would need a \d+-byte update statement"):
        proxy.set("k", "x" * (length + 1), metadata=metadata, if_version=if_version)
    assert wire.take() == []


def test_set_many_sends_the_largest_statement_that_fits(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    length = fitting_length(MANY_NAMES, None)
    items = {"a": "small", "k": "x" * length}
    assert proxy.set_many(items, metadata=MANY_NAMES) == 2
    statements = [statement for command in wire.take() for statement in command["updates"]]
    assert [statement["q"]["key"] for statement in statements] == ["a", "k"]
    assert encoded_size(dict(statements[1])) == MAX_STATEMENT_BYTES
    assert MAX_STATEMENT_BYTES < SERVER_PART_LIMIT


def test_a_full_size_document_with_600_metadata_names_is_measured_over_the_limit() -> None:
    """The case measured in issue 14: a document of exactly 16 MiB with 600 metadata names.
    Its document is accepted; its statement is not."""
    metadata = _core.check_metadata(MANY_NAMES)
    empty = SCOPE._encode_item("k", "", metadata[1], MAX_DOCUMENT_BYTES, False)[1]
    value = "x" * (MAX_DOCUMENT_BYTES - empty)
    assert SCOPE._encode_item("k", value, metadata[1], MAX_DOCUMENT_BYTES, False)[1] == (
        MAX_DOCUMENT_BYTES
    )
    writer = SCOPE.set_writer(metadata, _core.utc_now())
    # the size reported is the statement's exact size
    exact = MAX_STATEMENT_BYTES + len(value) - fitting_length(MANY_NAMES, None)
    assert exact > MAX_STATEMENT_BYTES
    with pytest.raises(ValueError, match=f"item 'k' would need a {exact}-byte update statement"):
        writer("k", value, MAX_DOCUMENT_BYTES)
