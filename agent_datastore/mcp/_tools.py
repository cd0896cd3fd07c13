"""The tools: one per proxy operation an agent needs, each an input JSON Schema, a description
written for a model, and one coroutine over an async proxy (local or remote).

The schemas state the proxy's limits as far as JSON Schema can; what it cannot state exactly
(a key's length in UTF-8 bytes, a value's size once stored) the descriptions say, and the
proxy's own checks refuse. Nothing here checks a rule of its own but the one MCP imposes
(a value nested deeper than ``MAX_MCP_DEPTH``, which could be stored but never read back over
MCP): an argument the schema accepts reaches the proxy, which stores it exactly or refuses it
with its own message.

An answer is bounded as the store service bounds its own: a ``get_many`` reads and returns at
most ``MAX_ANSWER_BYTES`` of JSON (always one value) and names the keys it did not read as
``remaining``; values are measured in a worker thread; the text form repeats the JSON only when
it is short.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import _codec, _core, _protocol
from .. import _operations as ops
from .._async import AsyncAgentDataStoreProxy
from .._items import Item
from .._remote import AsyncRemoteDataStoreProxy
from .._serving import json_pieces

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_MCP_DEPTH",
    "TOOLS",
    "Proxy",
    "TooDeepForMCP",
    "Tool",
    "item_to_json",
]

Proxy = AsyncAgentDataStoreProxy | AsyncRemoteDataStoreProxy

# The most keys a listing tool returns, and the most keys or items one batch tool takes: what
# the store service answers in one request, and a bound on what one tool result holds.
MAX_BATCH = _core.KEY_PAGE_SIZE
DEFAULT_LIST_LIMIT = 100
_MAX_TTL_SECONDS = int(_core.MAX_TTL.total_seconds())

# What one tool answer holds at most, in bytes of JSON: a get_many answers what fits and
# names the rest as ``remaining``; a single value larger than this still comes alone (up to
# the store's 16 MiB). The answer is for a model: 1 MiB of JSON is some 250,000 tokens or
# more, past most models' context and far past what clients pass on from one tool result,
# so a larger page would only cost the server (every other caller waits while the SDK
# encodes it on the event loop) for nothing the model can read.
MAX_ANSWER_BYTES = 1024 * 1024
# The text form repeats the structured content's JSON (for clients that give the model only
# the text, as the MCP specification recommends) when it is at most this long; past it, the
# text is a one-line summary, so that no answer carries a large value twice.
MAX_TEXT_COPY_BYTES = 64 * 1024
# The deepest value (lists and objects on its deepest path: [] is 1, {"a": []} is 2) that a
# tool takes or returns. The MCP SDK parses every JSON-RPC message with a limit of 201 levels
# of nesting, and the deepest place a tool puts a value is 5 levels down (message, result,
# structuredContent, item, metadata): a value nested deeper could be stored but not read back,
# or not parsed by the client at all. The store itself takes 400 (``_codec.MAX_VALUE_DEPTH``).
MAX_MCP_DEPTH = 196

# Strings are counted in characters by JSON Schema, in UTF-8 bytes by the store: a character
# is 1 to 4 bytes, so maxLength lets through some strings the proxy then refuses.
_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": _core.MAX_KEY_BYTES,
    "description": f"A key: any non-empty text of at most {_core.MAX_KEY_BYTES:,} bytes in "
    "UTF-8 ('/', '.', '$' and any Unicode are fine).",
}
_NAMESPACE = {
    "type": "string",
    "minLength": 1,
    "maxLength": _core.MAX_NAME_BYTES,
    "default": "default",
    "description": 'The namespace, a separate set of keys (default: "default"); at most '
    f"{_core.MAX_NAME_BYTES} bytes in UTF-8.",
}
_VALUE = {
    "description": "Any JSON value: object, array, string, number, true, false or null, "
    f"nested at most {MAX_MCP_DEPTH} levels. Integers (up to 4,300 digits) and object keys "
    "with '$' or '.' are kept exactly."
}
_METADATA = {
    "type": "object",
    # names are checked as the proxy checks them: non-empty, no leading '$', no '.', no NUL
    "propertyNames": {"pattern": "^[^$.\u0000][^.\u0000]*$", "maxLength": _core.MAX_KEY_BYTES},
    "description": "Small JSON values kept beside the value and merged into the item's "
    "metadata (a name given again replaces its value). Names must not start with '$' or "
    "contain '.'.",
}
_TTL = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": _MAX_TTL_SECONDS,
    "description": "Seconds until the item expires (rounded up to whole milliseconds); "
    "omit it for an item that never expires. Writing the item again without it removes "
    "the expiry.",
}
_IF_VERSION = {
    "type": "integer",
    "minimum": 0,
    "maximum": _core.MAX_INT64,
    "description": "Act only if the item is at this version (from get_item); 0 means "
    "only if it does not exist. Otherwise the call fails with a version conflict and "
    "changes nothing.",
}
_KEYS = {"type": "array", "items": _KEY, "maxItems": MAX_BATCH}

_ERRORS_COMMON = (
    "Errors (isError, with a message): an argument the store refuses (a key over "
    f"{_core.MAX_KEY_BYTES:,} bytes in UTF-8, a value over 16 MiB once stored, "
    f"nesting deeper than {MAX_MCP_DEPTH} levels); the store unavailable (try again later)."
)
_TOO_DEEP_ERROR = (
    f" A value stored by other means nested deeper than {MAX_MCP_DEPTH} levels cannot travel "
    "over MCP: reading it is an error (too_deep)."
)


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An input schema: the tool's arguments and a namespace; nothing else is accepted, so no
    argument can name another user or agent."""
    return {
        "type": "object",
        "properties": {**properties, "namespace": _NAMESPACE},
        "required": required,
        "additionalProperties": False,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def item_to_json(item: Item) -> dict[str, Any]:
    """An item as JSON: its value and metadata as stored, its times in ISO 8601 (UTC)."""
    return {
        "key": item.key,
        "value": item.value,
        "metadata": item.metadata,
        "createdAt": _iso(item.createdAt),
        "updatedAt": _iso(item.updatedAt),
        "version": item.version,
        "expiresAt": _iso(item.expiresAt),
    }


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def _too_deep_message(what: str) -> str:
    return (
        f"{what} is nested deeper than the {MAX_MCP_DEPTH} levels of lists and objects a value "
        f"can have over MCP (the store itself takes {_codec.MAX_VALUE_DEPTH})"
    )


class TooDeepForMCP(ValueError):
    """A value read from the store nested deeper than ``MAX_MCP_DEPTH`` levels: the store
    holds it (written by other means than MCP), but MCP cannot carry it."""

    def __init__(self, what: str) -> None:
        super().__init__(_too_deep_message(what) + ": read it without MCP")


def _deeper_than_mcp(value: Any) -> bool:
    if not isinstance(value, (dict, list)):
        return False
    try:
        _codec._check_depth(value, MAX_MCP_DEPTH)
    except TypeError:
        return True
    return False


def _check_depth_for_mcp(value: Any, what: str) -> None:
    """Refuse an argument (``invalid_argument``) that MCP could not carry back."""
    if _deeper_than_mcp(value):
        raise ValueError(_too_deep_message(what))


def _sizes(values: list[Any], keys: list[str] | None = None) -> list[int]:
    """The size in bytes of each value's JSON, as the SDK will send it; ``TooDeepForMCP`` for
    a value that MCP cannot carry (naming its key, if ``keys`` are given). The encoding is in
    pieces (``_serving.json_pieces``, Python code), so that in a worker thread it leaves the
    event loop running."""
    sizes = []
    for index, value in enumerate(values):
        if _deeper_than_mcp(value):
            raise TooDeepForMCP(
                "the value stored" if keys is None else f"the value of {keys[index]!r}"
            )
        sizes.append(sum(map(len, json_pieces(value))))
    return sizes


async def _sizes_off_the_loop(values: list[Any], keys: list[str] | None = None) -> list[int]:
    return await asyncio.to_thread(_sizes, values, keys)


def _text(data: Any, size: int, summary: str) -> str:
    """The text form: ``data``'s JSON when it is short (``size`` bytes), else ``summary``."""
    return _json(data) if size <= MAX_TEXT_COPY_BYTES else summary


# What a tool's coroutine returns: the structured content and its short text form.
Result = tuple[dict[str, Any], str]


@dataclass(frozen=True)
class Tool:
    """One tool: its name, description, input and output schemas, whether it changes
    anything, and the coroutine that runs it on a proxy already in the call's namespace."""

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    read_only: bool
    run: Callable[[Proxy, dict[str, Any]], Awaitable[Result]]


async def _get(proxy: Proxy, args: dict[str, Any]) -> Result:
    key = args["key"]
    missing = object()
    value = await proxy.get(key, missing)
    if value is missing:
        return {"key": key, "found": False, "value": None}, f"no item {key!r}"
    (size,) = await _sizes_off_the_loop([value])
    summary = f"found {key!r}: {size:,} bytes of JSON, in the structured content"
    return {"key": key, "found": True, "value": value}, _text(value, size, summary)


def _check_values_for_mcp(values: dict[str, Any], metadata: dict[str, Any] | None) -> None:
    """Refuse what MCP could not carry back: a value that could be stored but never read."""
    for key, value in values.items():
        _check_depth_for_mcp(value, f"the value of {key!r}")
    for name, value in (metadata or {}).items():
        _check_depth_for_mcp(value, f"the metadata value {name!r}")


async def _set(proxy: Proxy, args: dict[str, Any]) -> Result:
    key = args["key"]
    _check_values_for_mcp({key: args["value"]}, args.get("metadata"))
    await proxy.set(
        key,
        args["value"],
        args.get("metadata"),
        ttl=args.get("ttl"),
        if_version=args.get("if_version"),
    )
    return {"key": key, "written": True}, f"set {key!r} in namespace {proxy.namespace!r}"


async def _delete(proxy: Proxy, args: dict[str, Any]) -> Result:
    key = args["key"]
    deleted = await proxy.delete(key, if_version=args.get("if_version"))
    text = f"deleted {key!r}" if deleted else f"no item {key!r}"
    return {"key": key, "deleted": deleted}, text


async def _list_keys(proxy: Proxy, args: dict[str, Any]) -> Result:
    limit = args.get("limit", DEFAULT_LIST_LIMIT)
    keys = await proxy.list_keys(
        args.get("prefix"), limit=limit, start_after=args.get("start_after")
    )
    # a full page may have more after it; an empty next page is the only false lead
    following = keys[-1] if len(keys) == limit else None
    # at most 1,000 keys of at most 1,024 bytes: encoded on the loop, like the SDK will
    text = _json(keys)
    if len(text) > MAX_TEXT_COPY_BYTES:
        text = f"{len(keys)} keys, in the structured content"
    return {"keys": keys, "next_start_after": following}, text


async def _list_namespaces(proxy: Proxy, args: dict[str, Any]) -> Result:
    namespaces = await proxy.list_namespaces()
    return {"namespaces": namespaces}, _json(namespaces)


async def _read_within(
    proxy: Proxy, keys: list[str], budget: int
) -> tuple[dict[str, Any], set[str]]:
    """The values of ``keys`` that the store reads within about ``budget`` bytes (always one),
    and the keys it did not reach. A proxy's own ``get_many`` would read every value first,
    up to 1,000 of 16 MiB: this reads what the budget allows, as the store service does."""
    if isinstance(proxy, AsyncAgentDataStoreProxy):
        store = proxy._store
        read = ops.get_many_within(proxy._scope, store._settings(), keys, budget)
        found, unread, _ = await store._run(read)
        return found, set(unread)
    # one request to the service, which answers what fits in its own budget and names the
    # rest as remaining; a service that takes fewer keys a request gets the first ones
    asked = list(dict.fromkeys(_core.check_keys(keys)))
    if not asked:
        return {}, set()
    try:
        answer = await proxy._exchange(
            _protocol._with_namespace(proxy._scope, "get_many", keys=asked)
        )
    except _protocol.BatchTooLarge as exc:
        if not 0 < exc.max_batch < len(asked):
            raise
        first = asked[: exc.max_batch]
        request = _protocol._with_namespace(proxy._scope, "get_many", keys=first)
        answer = await proxy._exchange(request)
        answer.setdefault("remaining", []).extend(asked[exc.max_batch :])
    found, remaining = answer["result"], answer.get("remaining", [])
    if not isinstance(found, dict) or not isinstance(remaining, list):
        raise _protocol._not_the_protocol()
    return found, set(remaining)


async def _get_many(proxy: Proxy, args: dict[str, Any]) -> Result:
    keys = args["keys"]
    found, unread = await _read_within(proxy, keys, MAX_ANSWER_BYTES)
    sizes = await _sizes_off_the_loop(list(found.values()), list(found))
    kept: dict[str, Any] = {}
    total = 64  # the envelope: {"items":{...},"missing":[...],"remaining":[...]}, roughly
    for (key, value), size in zip(found.items(), sizes, strict=True):
        total += len(_json(key).encode()) + size + 2
        if kept and total > MAX_ANSWER_BYTES:
            break
        kept[key] = value
    asked = list(dict.fromkeys(keys))
    missing = [key for key in asked if key not in found and key not in unread]
    remaining = [key for key in asked if key not in kept and key not in missing]
    answer: dict[str, Any] = {"items": kept, "missing": missing}
    summary = f"found {len(kept)} of {len(asked)} keys; {len(missing)} missing"
    if remaining:
        answer["remaining"] = remaining
        summary += f"; {len(remaining)} remaining (not read: ask for them again)"
    if total <= MAX_TEXT_COPY_BYTES:
        summary += "\n" + _json(kept)
    return answer, summary


async def _set_many(proxy: Proxy, args: dict[str, Any]) -> Result:
    _check_values_for_mcp(args["items"], args.get("metadata"))
    written = await proxy.set_many(args["items"], args.get("metadata"), ttl=args.get("ttl"))
    return {"written": written}, f"set {written} items in namespace {proxy.namespace!r}"


async def _increment(proxy: Proxy, args: dict[str, Any]) -> Result:
    key = args["key"]
    value = await proxy.increment(key, args.get("amount", 1), ttl=args.get("ttl"))
    return {"key": key, "value": value}, str(value)


async def _get_item(proxy: Proxy, args: dict[str, Any]) -> Result:
    key = args["key"]
    item = await proxy.get_item(key)
    if item is None:
        return {"key": key, "found": False, "item": None}, f"no item {key!r}"
    details = item_to_json(item)
    size = sum(await _sizes_off_the_loop([item.value, *item.metadata.values()]))
    summary = (
        f"found {key!r} at version {item.version}: {size:,} bytes of JSON, in the "
        "structured content"
    )
    return {"key": key, "found": True, "item": details}, _text(details, size, summary)


async def _delete_many(proxy: Proxy, args: dict[str, Any]) -> Result:
    deleted = await proxy.delete_many(args["keys"])
    return {"deleted": deleted}, f"deleted {deleted} items"


def _output(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


_NULLABLE = {"type": ["string", "null"]}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_DATE = {"type": ["string", "null"], "description": "ISO 8601, UTC"}
_ITEM = {
    "type": ["object", "null"],
    "properties": {
        "key": {"type": "string"},
        "value": {},
        "metadata": {"type": "object"},
        "createdAt": _DATE,
        "updatedAt": _DATE,
        "version": {"type": "integer"},
        "expiresAt": _DATE,
    },
}

TOOLS: tuple[Tool, ...] = (
    Tool(
        "get",
        "Read a value",
        "Read the value stored under a key. Returns found=false (and value null) when there "
        "is no such item or it has expired. A value of any size up to the store's 16 MiB "
        "comes whole. " + _ERRORS_COMMON + _TOO_DEEP_ERROR,
        _schema({"key": _KEY}, ["key"]),
        _output({"key": {"type": "string"}, "found": {"type": "boolean"}, "value": {}}),
        True,
        _get,
    ),
    Tool(
        "set",
        "Store a value",
        "Store a JSON value under a key, replacing any value there; the item's version goes "
        "up by one with every write. Optional: metadata (merged into the item's), ttl "
        "(seconds until it expires) and if_version (compare-and-set: write only if the item "
        "is at that version, 0 for only if absent). A value takes at most 16 MiB once stored "
        "(less if the operator set a lower limit). Errors (isError): a version conflict when "
        "if_version does not match (nothing changed: read the item again); an argument the "
        "store refuses (key over 1,024 bytes in UTF-8, value too large, nesting deeper than "
        f"{MAX_MCP_DEPTH} levels, a metadata name starting with '$' or holding '.'); the store "
        "unavailable (try again later).",
        _schema(
            {
                "key": _KEY,
                "value": _VALUE,
                "metadata": _METADATA,
                "ttl": _TTL,
                "if_version": _IF_VERSION,
            },
            ["key", "value"],
        ),
        _output({"key": {"type": "string"}, "written": {"type": "boolean"}}),
        False,
        _set,
    ),
    Tool(
        "delete",
        "Delete an item",
        "Delete the item under a key. Returns deleted=false when there was none. With "
        "if_version, delete only if the item is at that version. Errors (isError): a version "
        "conflict when if_version does not match (nothing changed); a key the store refuses; "
        "the store unavailable.",
        _schema({"key": _KEY, "if_version": _IF_VERSION}, ["key"]),
        _output({"key": {"type": "string"}, "deleted": {"type": "boolean"}}),
        False,
        _delete,
    ),
    Tool(
        "list_keys",
        "List keys",
        "List the keys of a namespace in ascending order (by Unicode code point), optionally "
        f"only those starting with prefix. Returns at most limit keys (default "
        f"{DEFAULT_LIST_LIMIT}, at most {MAX_BATCH:,}); when a page is full, next_start_after "
        "is the key to pass as start_after for the next page (null when there is no more). "
        "Expired items are not listed. " + _ERRORS_COMMON,
        _schema(
            {
                "prefix": {
                    "type": "string",
                    "maxLength": _core.MAX_KEY_BYTES,
                    "description": "Only keys that start with this text (empty: all keys).",
                },
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_BATCH,
                    "default": DEFAULT_LIST_LIMIT,
                    "description": "The most keys to return.",
                },
                "start_after": {
                    "type": "string",
                    "maxLength": _core.MAX_KEY_BYTES,
                    "description": "Return only keys after this one (the previous page's "
                    "next_start_after).",
                },
            },
            [],
        ),
        _output(
            {"keys": {"type": "array", "items": {"type": "string"}}, "next_start_after": _NULLABLE}
        ),
        True,
        _list_keys,
    ),
    Tool(
        "list_namespaces",
        "List namespaces",
        "List the namespaces that hold at least one live item, in ascending order. The "
        "namespace argument is accepted and ignored. Errors (isError): the store unavailable.",
        _schema({}, []),
        _output({"namespaces": {"type": "array", "items": {"type": "string"}}}),
        True,
        _list_namespaces,
    ),
    Tool(
        "get_many",
        "Read several values",
        f"Read the values of up to {MAX_BATCH:,} keys in one call. Returns items (key to "
        "value, only for keys that exist) and missing (the keys that do not, in the order "
        f"asked). An answer holds at most {MAX_ANSWER_BYTES // 1024 // 1024} MiB of JSON: "
        "past that, remaining lists the keys not read, in the order asked, to ask for again "
        "(a single larger value still comes alone). " + _ERRORS_COMMON + _TOO_DEEP_ERROR,
        _schema({"keys": _KEYS}, ["keys"]),
        {
            "type": "object",
            "properties": {
                "items": {"type": "object"},
                "missing": _STRINGS,
                "remaining": {
                    **_STRINGS,
                    "description": "The keys not read because the answer was full (absent "
                    "when every key was answered).",
                },
            },
            "required": ["items", "missing"],
        },
        True,
        _get_many,
    ),
    Tool(
        "set_many",
        "Store several values",
        f"Store up to {MAX_BATCH:,} values at once (items: key to value), each as set would, "
        "with the same optional metadata and ttl for all. Every item is checked before "
        "anything is written: an item the store refuses writes none of them. Returns the "
        "number written. " + _ERRORS_COMMON,
        _schema(
            {
                "items": {
                    "type": "object",
                    "maxProperties": MAX_BATCH,
                    "propertyNames": {"minLength": 1, "maxLength": _core.MAX_KEY_BYTES},
                    "additionalProperties": _VALUE,
                    "description": "Keys to the JSON values to store under them.",
                },
                "metadata": _METADATA,
                "ttl": _TTL,
            },
            ["items"],
        ),
        _output({"written": {"type": "integer"}}),
        False,
        _set_many,
    ),
    Tool(
        "increment",
        "Add to a counter",
        "Add amount (default 1, may be negative) to the integer stored under a key, "
        "atomically, creating it from 0 if absent, and return the new value. A counter is a "
        "64-bit integer. Optional ttl: seconds until the counter expires (kept only when "
        "given). Errors (isError): the item holds something other than an integer, or the "
        "result would leave the 64-bit range (nothing changed); a key the store refuses; the "
        "store unavailable.",
        _schema(
            {
                "key": _KEY,
                "amount": {
                    "type": "integer",
                    "minimum": _core.MIN_INT64,
                    "maximum": _core.MAX_INT64,
                    "default": 1,
                    "description": "What to add (64-bit integer).",
                },
                "ttl": _TTL,
            },
            ["key"],
        ),
        _output({"key": {"type": "string"}, "value": {"type": "integer"}}),
        False,
        _increment,
    ),
    Tool(
        "get_item",
        "Read an item with its details",
        "Read an item with its details: value, metadata, createdAt, updatedAt, version (the "
        "number to pass as if_version to set or delete) and expiresAt (null if it does not "
        "expire). Returns found=false (and item null) when there is none. "
        + _ERRORS_COMMON
        + _TOO_DEEP_ERROR,
        _schema({"key": _KEY}, ["key"]),
        _output({"key": {"type": "string"}, "found": {"type": "boolean"}, "item": _ITEM}),
        True,
        _get_item,
    ),
    Tool(
        "delete_many",
        "Delete several items",
        f"Delete the items of up to {MAX_BATCH:,} keys in one call (keys with no item are "
        "skipped) and return how many were deleted. " + _ERRORS_COMMON,
        _schema({"keys": _KEYS}, ["keys"]),
        _output({"deleted": {"type": "integer"}}),
        False,
        _delete_many,
    ),
)
