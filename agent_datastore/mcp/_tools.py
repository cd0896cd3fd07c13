"""The tools: one per proxy operation an agent needs, each an input JSON Schema, a description
written for a model, and one coroutine over an async proxy (local or remote).

The schemas state the proxy's limits as far as JSON Schema can; what it cannot state exactly
(a key's length in UTF-8 bytes, a value's size once stored) the descriptions say, and the
proxy's own checks refuse. Nothing here checks a rule of its own: an argument the schema
accepts reaches the proxy, which stores it exactly or refuses it with its own message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import _core
from .._async import AsyncAgentDataStoreProxy
from .._items import Item
from .._remote import AsyncRemoteDataStoreProxy

__all__ = ["TOOLS", "Proxy", "Tool", "item_to_json"]

Proxy = AsyncAgentDataStoreProxy | AsyncRemoteDataStoreProxy

# The most keys a listing tool returns, and the most keys or items one batch tool takes: what
# the store service answers in one request, and a bound on what one tool result holds.
MAX_BATCH = _core.KEY_PAGE_SIZE
DEFAULT_LIST_LIMIT = 100
_MAX_TTL_SECONDS = int(_core.MAX_TTL.total_seconds())

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
    "description": "Any JSON value: object, array, string, number, true, false or null. "
    "Integers of any size and object keys with '$' or '.' are kept exactly."
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
    "nesting deeper than 400 levels); the store unavailable (try again later)."
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
    return {"key": key, "found": True, "value": value}, _json(value)


async def _set(proxy: Proxy, args: dict[str, Any]) -> Result:
    key = args["key"]
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
    return {"keys": keys, "next_start_after": following}, _json(keys)


async def _list_namespaces(proxy: Proxy, args: dict[str, Any]) -> Result:
    namespaces = await proxy.list_namespaces()
    return {"namespaces": namespaces}, _json(namespaces)


async def _get_many(proxy: Proxy, args: dict[str, Any]) -> Result:
    keys = args["keys"]
    found = await proxy.get_many(keys)
    missing = [key for key in dict.fromkeys(keys) if key not in found]
    return {"items": found, "missing": missing}, _json(found)


async def _set_many(proxy: Proxy, args: dict[str, Any]) -> Result:
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
    return {"key": key, "found": True, "item": details}, _json(details)


async def _delete_many(proxy: Proxy, args: dict[str, Any]) -> Result:
    deleted = await proxy.delete_many(args["keys"])
    return {"deleted": deleted}, f"deleted {deleted} items"


def _output(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


_NULLABLE = {"type": ["string", "null"]}
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
        "is no such item or it has expired. " + _ERRORS_COMMON,
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
        "400 levels, a metadata name starting with '$' or holding '.'); the store "
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
        "asked). " + _ERRORS_COMMON,
        _schema({"keys": _KEYS}, ["keys"]),
        _output(
            {"items": {"type": "object"}, "missing": {"type": "array", "items": {"type": "string"}}}
        ),
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
        "expire). Returns found=false (and item null) when there is none. " + _ERRORS_COMMON,
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
