"""The store's rules, free of I/O: limits, input validation, and the exact command of every
operation. The proxies only send what this module builds and hand the replies back to it.

One item is one document::

    {userId, agentName, namespace, key, value, metadata, createdAt, updatedAt}

with a unique index on (userId, agentName, namespace, key). Every filter built here starts
with equality on userId and agentName, then namespace, so each query is served by that index
and targeted to one shard of a cluster sharded on its prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import _codec

__all__ = [
    "INDEX_KEYS",
    "INDEX_NAME",
    "LISTING_BATCH_SIZE",
    "MAX_DOCUMENT_BYTES",
    "MAX_KEY_BYTES",
    "MAX_NAME_BYTES",
    "SIMPLE_COLLATION",
    "Scope",
    "Upsert",
    "check_key",
    "check_keys",
    "check_metadata",
    "check_name",
    "key_prefix_pattern",
    "utc_now",
]

MAX_KEY_BYTES = 1024
"""Longest key, in UTF-8 bytes."""
MAX_NAME_BYTES = 512
"""Longest user id, agent name or namespace, in UTF-8 bytes."""
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's limit on one BSON document, which holds one item."""
# What a find command may spend on its key list, leaving room for the rest of the command.
_MAX_KEY_LIST_BYTES = MAX_DOCUMENT_BYTES - 64 * 1024

INDEX_KEYS: list[tuple[str, int]] = [("userId", 1), ("agentName", 1), ("namespace", 1), ("key", 1)]
# The name MongoDB itself gives these keys, so an index an operator made by hand is the same one.
INDEX_NAME = "userId_1_agentName_1_namespace_1_key_1"

SIMPLE_COLLATION: dict[str, str] = {"locale": "simple"}
"""Sent with every command and index: binary string comparison. A collection created with a
case-insensitive default collation would otherwise let user "alice" match "Alice"'s items, and
would sort keys in another order than code points."""

# Fields of an item document beyond its scope strings and payloads: the document's own length
# and terminator; _id (ObjectId); the type byte and name of userId, agentName, namespace, key,
# value and metadata; createdAt and updatedAt (dates).
_ITEM_OVERHEAD = 5 + 17 + (1 + 7) + (1 + 10) + (1 + 10) + (1 + 4) + (1 + 6) + (1 + 9) + 2 * 19

# The server's default first batch is 101 documents; asking for more keeps a listing or a
# get_many to one round trip until the reply reaches the server's 16 MiB batch limit.
LISTING_BATCH_SIZE = 100_000


def utc_now() -> datetime:
    """The current time as MongoDB will store it: UTC, whole milliseconds."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def check_name(value: object, what: str, limit: int = MAX_NAME_BYTES) -> str:
    """A non-empty ``str`` of at most ``limit`` UTF-8 bytes, as a plain ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if type(value) is not str:
        value = str.__str__(value)
    if not value:
        raise ValueError(f"{what} must not be empty")
    try:
        size = _codec.string_size(value)
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid Unicode (lone surrogate)") from None
    if size > limit:
        raise ValueError(f"{what} is {size} bytes in UTF-8, over the limit of {limit}")
    return value


def check_key(key: object) -> str:
    return check_name(key, "key", MAX_KEY_BYTES)


def check_keys(keys: object) -> list[str]:
    """The distinct keys of a ``get_many`` call, in the order given."""
    if isinstance(keys, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(
        keys, Iterable
    ):
        raise TypeError(f"keys must be a list of str, not {type(keys).__name__}")
    checked = list(dict.fromkeys(check_key(key) for key in keys))
    # each key is an array element: type byte, index name, string length, bytes, NUL
    size = sum(map(_codec.string_size, checked)) + 6 * len(checked)
    size += _codec.array_names_size(len(checked))
    if size > _MAX_KEY_LIST_BYTES:
        raise ValueError(
            f"get_many of {len(checked)} keys needs a {size}-byte query, over MongoDB's "
            f"{MAX_DOCUMENT_BYTES}-byte command limit; split the keys into smaller batches"
        )
    return checked


def check_prefix(prefix: object) -> str | None:
    """``None`` for no filtering (an empty prefix included), else the prefix."""
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str or None, not {type(prefix).__name__}")
    if type(prefix) is not str:
        prefix = str.__str__(prefix)
    if not prefix:
        return None
    try:
        size = _codec.string_size(prefix)
    except UnicodeEncodeError:
        raise ValueError(f"prefix {prefix!r} is not valid Unicode (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"prefix is {size} bytes in UTF-8, longer than any key ({MAX_KEY_BYTES})")
    return prefix


def key_prefix_pattern(prefix: str) -> str:
    """An anchored regular expression matching exactly the keys that start with ``prefix``.

    Only a literal after ``^`` lets MongoDB turn the match into tight index bounds. A NUL byte
    cannot appear in a BSON regex, so it is written as the escape ``\\x00``.
    """
    return "^" + re.escape(prefix).replace("\x00", "\\x00")


def check_metadata(metadata: object) -> tuple[dict[str, Any], int]:
    """The ``$set`` paths for ``metadata`` (``metadata.<name>``) and their BSON size.

    The size is that of a metadata sub-document holding only these names.
    """
    if metadata is None:
        return {}, 5
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict or None, not {type(metadata).__name__}")
    paths: dict[str, Any] = {}
    size = 5
    for name, value in metadata.items():
        name = check_name(name, "metadata name", MAX_KEY_BYTES)
        if name.startswith("$") or "." in name or "\x00" in name:
            raise ValueError(
                f"metadata name {name!r} must not start with '$' or contain '.' or NUL: "
                "MongoDB could not update it as a field"
            )
        try:
            stored, value_size = _codec.encode(value, 3)
        except TypeError as exc:
            raise TypeError(f"metadata {name!r} is not a storable JSON value: {exc}") from None
        paths["metadata." + name] = stored
        size += 2 + _codec.string_size(name) + value_size
    return paths, size


@dataclass(frozen=True, slots=True)
class Upsert:
    """The filter and update document of one ``set``: ``$set`` of the value, ``updatedAt`` and
    each metadata name; ``createdAt`` (and an empty ``metadata`` when none is given) only when
    the item is new."""

    filter: dict[str, Any]
    update: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scope:
    """One proxy's user, agent and namespace, validated, with the filters built from them."""

    user_id: str
    agent_name: str
    namespace: str
    namespace_filter: dict[str, str] = field(init=False, repr=False, compare=False)
    _fixed_size: int = field(init=False, repr=False, compare=False)

    @classmethod
    def of(cls, user_id: object, agent_name: object, namespace: object) -> Scope:
        return cls(
            check_name(user_id, "user_id"),
            check_name(agent_name, "agent_name"),
            check_name(namespace, "namespace"),
        )

    def __post_init__(self) -> None:
        base = {"userId": self.user_id, "agentName": self.agent_name, "namespace": self.namespace}
        object.__setattr__(self, "namespace_filter", base)
        strings = sum(_codec.string_size(s) + 5 for s in base.values())
        object.__setattr__(self, "_fixed_size", _ITEM_OVERHEAD + strings)

    def agent_filter(self) -> dict[str, str]:
        return {"userId": self.user_id, "agentName": self.agent_name}

    def item_filter(self, key: str) -> dict[str, str]:
        return {**self.namespace_filter, "key": key}

    def keys_filter(self, prefix: str | None) -> dict[str, Any]:
        if prefix is None:
            return self.namespace_filter
        return {**self.namespace_filter, "key": {"$regex": key_prefix_pattern(prefix)}}

    def many_filter(self, keys: list[str]) -> dict[str, Any]:
        return {**self.namespace_filter, "key": {"$in": keys}}

    def upsert(
        self,
        key: str,
        value: Any,
        metadata: tuple[dict[str, Any], int],
        now: datetime,
    ) -> Upsert:
        """The command of ``set(key, value, metadata)``; ``ValueError`` if the item would not
        fit in one document."""
        try:
            stored, value_size = _codec.encode(value, 2)
        except TypeError as exc:
            raise TypeError(f"value for key {key!r} is not storable JSON: {exc}") from None
        paths, metadata_size = metadata
        size = self._fixed_size + _codec.string_size(key) + 5 + value_size + metadata_size
        if size > MAX_DOCUMENT_BYTES:
            raise ValueError(
                f"item {key!r} would be a {size}-byte document, over MongoDB's limit of "
                f"{MAX_DOCUMENT_BYTES} bytes"
            )
        on_insert: dict[str, Any] = {"createdAt": now}
        if not paths:
            on_insert["metadata"] = {}
        return Upsert(
            self.item_filter(key),
            {"$set": {"value": stored, "updatedAt": now, **paths}, "$setOnInsert": on_insert},
        )


def is_equivalent_index(spec: Mapping[str, Any]) -> bool:
    """Whether an index from ``index_information()`` is the store's unique index, whatever
    its name."""
    collation = spec.get("collation") or SIMPLE_COLLATION
    return (
        [(name, int(direction)) for name, direction in spec.get("key", [])] == INDEX_KEYS
        and bool(spec.get("unique"))
        and collation.get("locale") == "simple"
    )


def check_items(items: object) -> Mapping[Any, Any]:
    if not isinstance(items, Mapping):
        raise TypeError(f"items must be a dict of key to value, not {type(items).__name__}")
    return items


def value_of(document: Mapping[str, Any] | None, default: Any) -> Any:
    """What ``get`` returns for a found document (or ``None``)."""
    if document is None:
        return default
    return _codec.decode(document.get("value"))


def values_by_key(documents: Iterable[Mapping[str, Any]], keys: list[str]) -> dict[str, Any]:
    """What ``get_many`` returns: found keys in the order asked, with their values."""
    found = {doc["key"]: doc.get("value") for doc in documents}
    return {key: _codec.decode(found[key]) for key in keys if key in found}
