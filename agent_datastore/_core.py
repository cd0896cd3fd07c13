"""The store's rules, free of I/O: limits, input validation, and the exact command of every
operation. The proxies only send what this module builds and hand the replies back to it.

One item is one document::

    {userId, agentName, namespace, key, value, metadata, createdAt, updatedAt, version,
     expiresAt (only for an item with a ttl)}

with a unique index on (userId, agentName, namespace, key) and a TTL index on expiresAt. Every
filter built here starts with equality on userId and agentName, then namespace, so each query
is served by the unique index and targeted to one shard of a cluster sharded on its prefix.

Expiry: an item whose expiresAt is a date not after "now" is expired. The server's TTL monitor
deletes it within about a minute; until then every read here filters it out (``live_query``)
and every write treats it as absent (the ``$__ads_live`` flag of the write pipelines), so an
expired item is gone at once for every caller. The same rule is written three times, once per
language it must be spoken in: a query (``live_query``), an aggregation expression
(``_live_expression``) and Python (``is_live``), and the tests hold them to one another.

Writes are update pipelines: one atomic command decides on the server, from the stored
document, whether the item is live, whether a compare-and-set holds, whether a counter can be
added to, and writes accordingly. Commands that must report what they found (compare-and-set,
increment) return the document as it was before, and the proxy replays the same decision on it
in Python to know what the server did.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import bson
from bson.regex import Regex

from . import _codec
from ._exceptions import DataStoreError

__all__ = [
    "COMMAND_HEADROOM",
    "FAILOVER_WINDOW_MS",
    "INDEX_KEYS",
    "INDEX_NAME",
    "KEY_PAGE_SIZE",
    "LISTING_BATCH_SIZE",
    "MAX_COMMAND_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_INT64",
    "MAX_KEY_BYTES",
    "MAX_NAME_BYTES",
    "MAX_STATEMENT_BYTES",
    "MAX_TTL",
    "MIN_INT64",
    "NAMESPACE_SEPARATOR",
    "SERVICE_SEARCH_MAX_TIME_MS",
    "SIMPLE_COLLATION",
    "TTL_INDEX_KEYS",
    "TTL_INDEX_NAME",
    "WITHIN",
    "Clock",
    "Scope",
    "Write",
    "as_utc",
    "check_amount",
    "check_found_items",
    "check_if_version",
    "check_key",
    "check_keys",
    "check_limit",
    "check_max_value_bytes",
    "check_metadata",
    "check_metadata_name",
    "check_name",
    "check_offset",
    "check_prefix",
    "check_ttl",
    "increment_result",
    "is_live",
    "key_prefix_pattern",
    "live_query",
    "namespace_condition",
    "set_conflict",
    "statement_size",
    "utc_now",
    "version_of",
]

MAX_KEY_BYTES = 1024
"""Longest key, in UTF-8 bytes."""
MAX_NAME_BYTES = 512
"""Longest user id, agent name or namespace, in UTF-8 bytes."""
MAX_DOCUMENT_BYTES = _codec.MAX_ENCODED_BYTES
"""MongoDB's limit on one BSON document, which holds one item."""
MAX_COMMAND_BYTES = MAX_DOCUMENT_BYTES + 16_382
"""The most one command may carry: pymongo refuses to send a command whose body and
statements together pass 16 MiB + 16,382 bytes (``message._COMMAND_OVERHEAD``), and the server
refuses any part of a command (the body, or one statement of a document sequence) over
16 MiB + 16 KiB (``BSONObjMaxInternalSize``). The first is the smaller."""
COMMAND_HEADROOM = 2_048
"""What the limit on one update statement leaves for the rest of its command. An ``update``
command carries, besides its statement, its name and the collection's, ``ordered``, ``$db``
and what pymongo adds (``lsid``, ``txnNumber``, ``$clusterTime``, ``writeConcern``,
``maxTimeMS``, the Stable API fields, the document-sequence header): about 700 bytes at most
with a 255-byte namespace. A ``findAndModify`` body holds the statement's filter and pipeline
under longer names, with ``new`` and a projection (``fields``), and the same additions: about
750 bytes. The rest is room for what is not foreseen, such as a long write-concern tag."""
MAX_STATEMENT_BYTES = MAX_COMMAND_BYTES - COMMAND_HEADROOM
"""The largest update statement ``{q, u, multi, upsert, collation}`` a write may send, as
``statement_size`` measures it: the same for ``set`` (``update``), ``set`` with ``if_version``
(``findAndModify``) and every item of ``set_many`` (one statement of a bulk ``update``)."""
# How much larger a write's statement can be than the item's document, at most: the pipeline's
# own expressions (1,119 bytes measured, with a guard and an int64 if_version), and per
# metadata name, its path written again and the expressions around its value (98 bytes
# measured with a guard) besides the name's bytes (counted by adding the metadata's size once
# more). The tests hold these bounds to statement_size.
_PIPELINE_OVERHEAD = 1_280
_METADATA_NAME_OVERHEAD = 100
_SURELY_FITS = MAX_STATEMENT_BYTES - _PIPELINE_OVERHEAD
# What a find command may spend on its key list, leaving room for the rest of the command.
_MAX_KEY_LIST_BYTES = MAX_DOCUMENT_BYTES - 64 * 1024

INDEX_KEYS: list[tuple[str, int]] = [("userId", 1), ("agentName", 1), ("namespace", 1), ("key", 1)]
# The name MongoDB itself gives these keys, so an index an operator made by hand is the same one.
INDEX_NAME = "userId_1_agentName_1_namespace_1_key_1"

SIMPLE_COLLATION: dict[str, str] = {"locale": "simple"}
"""Sent with every command and index: binary string comparison. A collection created with a
case-insensitive default collation would otherwise let user "alice" match "Alice"'s items, and
would sort keys in another order than code points."""

# The TTL index: the server deletes an item once its expiresAt date has passed. Items without
# expiresAt are left out of it (sparse), so it costs nothing for items that never expire.
TTL_INDEX_KEYS: list[tuple[str, int]] = [("expiresAt", 1)]
TTL_INDEX_NAME = "expiresAt_1"

FIRST_USE_INDEX_BUILD_MS = 5_000
"""The ``maxTimeMS`` of the ``createIndexes`` a store's first call sends when an index is
missing: the longest an index build can hold up that call. An empty or small collection is
indexed well within it. On a larger one the server stops the build at this bound and aborts
it (``create_indexes_cmd.cpp``: an interrupted build is aborted unless the node stepped down),
so the call goes on without the indexes and the store tries again after
``INDEX_RETRY_INTERVAL``; ``agent-datastore ensure-indexes`` builds them without this bound."""
INDEX_RETRY_INTERVAL = 900.0
"""Seconds after a first-use build was cut off at ``FIRST_USE_INDEX_BUILD_MS`` before the
store tries again (a ``listIndexes``, and the bounded build if still needed). Each try that
is cut off costs every voting member up to that bound of build work, thrown away: at this
interval, under 1% of one core per store, while an operator's ``ensure-indexes`` is noticed
within a quarter of an hour."""
ENSURE_INDEXES_TIMEOUT = 86_400.0
"""Seconds ``ensure_indexes()`` waits for an index build by default: a day, for any
collection this store is meant for. It is sent as the build's ``maxTimeMS`` (and the socket
timeout of that one command), so a build still running then is aborted by the server."""

# Fields of an item document beyond its scope strings and payloads: the document's own length
# and terminator; _id (ObjectId); the type byte and name of userId, agentName, namespace, key,
# value and metadata; createdAt and updatedAt (dates); version (an int32 until the item has
# been written 2**31 times).
_ITEM_OVERHEAD = (
    5 + 17 + (1 + 7) + (1 + 10) + (1 + 10) + (1 + 4) + (1 + 6) + (1 + 9) + 2 * 19 + (1 + 8 + 4)
)
_EXPIRES_AT_SIZE = 1 + 10 + 8  # only items with a ttl have it

MIN_INT64 = -(2**63)
MAX_INT64 = 2**63 - 1
MAX_TTL = timedelta(days=36_500)
"""Longest ttl: a hundred years. Anything longer is surely a unit mistake; leave ttl out for an
item that should not expire."""
SERVICE_SEARCH_MAX_TIME_MS = 10_000
"""How long the server may run one ``find_items`` page for the store service (``maxTimeMS``):
a filtered search reads every item of its namespaces that the filter has to look at, and a
tenant must not hold the database for longer than this per request. Below the client's
30-second socket timeout, so the server stops the work rather than the client leaving it."""
KEY_PAGE_SIZE = 1_000
"""Keys per query of ``iter_keys``: what it holds in memory at most, besides the caller's."""

Clock = Callable[[], datetime]

FAILOVER_WINDOW_MS = 15_000
"""How long a call keeps looking for a primary while members of the replica set answer but
none is primary (an election), counted from the call's first server selection; a client's
``timeoutMS`` replaces it. An unplanned election takes about 12 s with the default
``electionTimeoutMillis`` of 10 s (MongoDB's manual: the median "should not typically exceed
12 seconds"), and the driver finds the new primary within about half a second after
(``minHeartbeatFrequencyMS``, or at once with the streaming protocol of 4.4+). When nothing
answers, the call fails after ``serverSelectionTimeoutMS`` as before. See docs/operations.md."""

# The server's default first batch is 101 documents; asking for more keeps a listing or a
# get_many to one round trip until the reply reaches the server's 16 MiB batch limit.
LISTING_BATCH_SIZE = 100_000


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc_now(clock: Clock | None = None) -> datetime:
    """The current time (from ``clock`` if given) as MongoDB will store it: UTC, whole
    milliseconds."""
    if clock is None:
        # the system clock, cut to whole milliseconds in one addition: this runs on every
        # call of every operation, and datetime.replace() costs three times as much
        return _EPOCH + timedelta(0, 0, 0, time.time_ns() // 1_000_000)
    now = clock()
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError(f"the store's clock must return an aware datetime, not {now!r}")
    now = now.astimezone(timezone.utc)
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


def check_keys(keys: object, operation: str = "get_many") -> list[str]:
    """The distinct keys of a ``get_many`` (or ``delete_many``: ``operation`` names it in
    the error) call, in the order given."""
    plain = _plain_keys(keys)
    if plain is not None:
        checked, key_bytes = plain
    else:
        if isinstance(keys, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(
            keys, Iterable
        ):
            raise TypeError(f"keys must be a list of str, not {type(keys).__name__}")
        checked = list(dict.fromkeys(check_key(key) for key in keys))
        key_bytes = sum(map(_codec.string_size, checked))
    # each key is an array element: type byte, index name, string length, bytes, NUL
    size = key_bytes + 6 * len(checked)
    size += _codec.array_names_size(len(checked))
    if size > _MAX_KEY_LIST_BYTES:
        raise ValueError(
            f"{operation} of {len(checked)} keys needs a {size}-byte query, over MongoDB's "
            f"{MAX_DOCUMENT_BYTES}-byte command limit; split the keys into smaller batches"
        )
    return checked


_ONLY_STR = {str}


def _plain_keys(keys: object) -> tuple[list[str], int] | None:
    """The distinct keys of a list or tuple of ASCII ``str`` keys that ``check_key`` would all
    accept, and their size in bytes, checked in a few passes at C speed; ``None`` for anything
    else, which ``check_keys`` then checks key by key (and raises for, as ever)."""
    if type(keys) is not list and type(keys) is not tuple:
        return None
    if not keys or set(map(type, keys)) != _ONLY_STR:  # before hashing: a key may be a list
        return None
    unique = dict.fromkeys(keys)
    joined = "".join(unique)
    # ASCII: one byte per character, so the lengths are the UTF-8 sizes, with no surrogate
    if not joined.isascii() or "" in unique:
        return None
    # no key can be longer than all of them together
    if len(joined) > MAX_KEY_BYTES and max(map(len, unique)) > MAX_KEY_BYTES:
        return None
    return list(unique), len(joined)


def check_prefix(prefix: object, what: str = "prefix") -> str | None:
    """``None`` for no filtering (``None`` or an empty string), else the text, at most as long
    as a key. Also checks ``start_after``, the key a page starts after."""
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise TypeError(f"{what} must be a str or None, not {type(prefix).__name__}")
    if type(prefix) is not str:
        prefix = str.__str__(prefix)
    if not prefix:
        return None
    try:
        size = _codec.string_size(prefix)
    except UnicodeEncodeError:
        raise ValueError(f"{what} {prefix!r} is not valid Unicode (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"{what} is {size} bytes in UTF-8, longer than any key ({MAX_KEY_BYTES})")
    return prefix


def key_prefix_pattern(prefix: str) -> str:
    """An anchored regular expression matching exactly the keys that start with ``prefix``.

    Only a literal after ``^`` lets MongoDB turn the match into tight index bounds. A NUL byte
    cannot appear in a BSON regex, so it is written as the escape ``\\x00``.
    """
    return "^" + re.escape(prefix).replace("\x00", "\\x00")


NAMESPACE_SEPARATOR = "."
"""What separates the labels of a namespace path (``a.b`` is below ``a``): what ``within``
"subtree" of ``find_items`` follows. A namespace is any string; only searches read it as a
path."""
WITHIN = ("namespace", "subtree", "agent")
"""The namespaces a search looks in: the scope's own, the scope's and those below it, or every
namespace of the scope's agent."""


def namespace_condition(namespace: str, within: object) -> dict[str, Any]:
    """The query condition on the ``namespace`` field of a search ``within`` (see ``WITHIN``)
    ``namespace``: ``{}`` for the whole agent.

    Below a namespace means starting with it and the separator. The namespace itself and an
    anchored literal prefix in one ``$in``: MongoDB's planner unions the point and the prefix
    range into the index bounds of one scan, which reads namespaces in index order, so a sort
    on (namespace, key) needs no sort stage."""
    if within == "namespace":
        return {"namespace": namespace}
    if within == "subtree":
        below = Regex(key_prefix_pattern(namespace + NAMESPACE_SEPARATOR))
        return {"namespace": {"$in": [namespace, below]}}
    if within == "agent":
        return {}
    if not isinstance(within, str):
        raise TypeError(f"within must be a str, not {type(within).__name__}")
    raise ValueError(f"within must be one of {', '.join(WITHIN)}, not {within!r}")


def check_found_items(items: object) -> dict[str, list[str]]:
    """The (namespace, key) pairs of a ``refresh_expiry``, as the distinct keys of each
    namespace, checked as names and keys are, and bounded as ``check_keys`` bounds one list."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        kind = type(items).__name__
        raise TypeError(f"items must be a list of (namespace, key) pairs, not {kind}")
    by_namespace: dict[str, dict[str, None]] = {}
    for pair in items:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"each item must be a (namespace, key) pair, not {pair!r:.100}")
        namespace = check_name(pair[0], "namespace")
        by_namespace.setdefault(namespace, {})[check_key(pair[1])] = None
    size = sum(
        _codec.string_size(namespace) + sum(map(_codec.string_size, keys)) + 8 * len(keys) + 64
        for namespace, keys in by_namespace.items()
    )
    if size > _MAX_KEY_LIST_BYTES:
        raise ValueError(
            f"refresh_expiry of {sum(map(len, by_namespace.values()))} items needs a {size}-byte "
            f"query, over MongoDB's {MAX_DOCUMENT_BYTES}-byte command limit; split them"
        )
    return {namespace: list(keys) for namespace, keys in by_namespace.items()}


def check_metadata_name(name: object, what: str = "metadata name") -> str:
    """A metadata name: a field of the item's ``metadata`` document."""
    checked = check_name(name, what, MAX_KEY_BYTES)
    if checked.startswith("$") or "." in checked or "\x00" in checked:
        raise ValueError(
            f"{what} {checked!r} must not start with '$' or contain '.' or NUL: "
            "MongoDB could not update it as a field"
        )
    return checked


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
        name = check_metadata_name(name)
        try:
            stored, value_size = _codec.encode(value, 3)
        except TypeError as exc:
            raise TypeError(f"metadata {name!r} is not a storable JSON value: {exc}") from None
        except _codec.ValueTooLarge as exc:
            raise ValueError(
                f"metadata {name!r} is over {exc.size - 1} bytes, more than MongoDB's limit of "
                f"{MAX_DOCUMENT_BYTES} bytes for a whole document"
            ) from None
        paths["metadata." + name] = stored
        size += 2 + _codec.string_size(name) + value_size
    return paths, size


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return int(value)


def check_limit(limit: object) -> int:
    """0 for no limit (``None``), else a positive number of results."""
    if limit is None:
        return 0
    limit = _check_int(limit, "limit")
    if not 1 <= limit <= MAX_INT64:
        raise ValueError(f"limit must be at least 1 (or None for no limit), not {limit}")
    return limit


def check_offset(offset: object) -> int:
    """How many results a search skips: 0 or more."""
    offset = _check_int(offset, "offset")
    if not 0 <= offset <= MAX_INT64:
        raise ValueError(f"offset must be 0 or more, not {offset}")
    return offset


def check_ttl(ttl: object) -> timedelta | None:
    """How long an item lives, as a whole number of milliseconds, rounded up so that any
    positive ttl leaves the item readable for at least one millisecond."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        microseconds = ttl // timedelta(microseconds=1)
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        try:
            seconds = float(ttl)
            if not math.isfinite(seconds):
                raise ValueError(f"ttl must be a finite number of seconds, not {ttl}")
            # timedelta rounds to the nearest microsecond; seconds * 10**6 would carry the
            # float's error into the rounding up below (2.007 s would become 2.008 s)
            microseconds = timedelta(seconds=seconds) // timedelta(microseconds=1)
        except OverflowError:
            raise ValueError(f"ttl {ttl} seconds is longer than {MAX_TTL.days} days") from None
        if seconds > 0 and microseconds == 0:
            microseconds = 1  # positive, however small: it still lives a millisecond
    else:
        raise TypeError(f"ttl must be a number of seconds or a timedelta, not {type(ttl).__name__}")
    if microseconds <= 0:
        raise ValueError(f"ttl must be positive, not {ttl!r}")
    if microseconds > MAX_TTL // timedelta(microseconds=1):
        raise ValueError(f"ttl {ttl!r} is longer than {MAX_TTL.days} days")
    return timedelta(milliseconds=-(-microseconds // 1000))


def check_if_version(if_version: object) -> int | None:
    if if_version is None:
        return None
    if_version = _check_int(if_version, "if_version")
    if not 0 <= if_version <= MAX_INT64:
        raise ValueError(f"if_version must be 0 (absent) or a version >= 1, not {if_version}")
    return if_version


def check_amount(amount: object) -> int:
    amount = _check_int(amount, "amount")
    if not MIN_INT64 <= amount <= MAX_INT64:
        raise ValueError(f"amount {amount} is outside the 64-bit integer range")
    return amount


def check_max_value_bytes(limit: object) -> int:
    """A store's limit on the BSON size of one value; ``None`` for MongoDB's own limit."""
    if limit is None:
        return MAX_DOCUMENT_BYTES
    limit = _check_int(limit, "max_value_bytes")
    if not 1 <= limit <= MAX_DOCUMENT_BYTES:
        raise ValueError(f"max_value_bytes must be between 1 and {MAX_DOCUMENT_BYTES}, not {limit}")
    return limit


def as_utc(moment: datetime) -> datetime:
    """A date read from the database, as the store hands it out: aware, in UTC.

    The store's codec reads dates naive (``_store.CODEC_OPTIONS``), and BSON dates are UTC, so
    a naive date only needs its zone; an aware one (from a stand-in collection) is converted.
    """
    zone = moment.tzinfo
    if zone is None:
        return moment.replace(tzinfo=timezone.utc)
    if zone is timezone.utc:
        return moment
    return moment.astimezone(timezone.utc)


def live_query(now: datetime) -> dict[str, Any]:
    """The query condition of an item that has not expired at ``now``.

    ``$lte`` on a date matches only dates, so items without expiresAt (or with anything but a
    date there, which the TTL monitor ignores as well) are live.
    """
    return {"expiresAt": {"$not": {"$lte": now}}}


def is_live(document: Mapping[str, Any] | None, now: datetime) -> bool:
    """``live_query`` and ``_live_expression`` in Python, for a document as it was before a
    write: it exists and has not expired."""
    if document is None or "createdAt" not in document:
        return False
    expires = document.get("expiresAt")
    return not (isinstance(expires, datetime) and as_utc(expires) <= now)


def version_of(document: Mapping[str, Any]) -> int:
    """A stored item's version. Items written before versions existed count as version 1."""
    version = document.get("version")
    if version is None:
        return 1
    if isinstance(version, bool) or not isinstance(version, (int, float)):
        raise DataStoreError(
            f"item {document.get('key')!r} has a malformed version {version!r} "
            "(see `agent-datastore doctor`)"
        )
    return int(version)


def set_conflict(before: Mapping[str, Any] | None, now: datetime, if_version: int) -> int | None:
    """The current version when a ``set``/``delete`` with ``if_version`` must not act (0: the
    item is absent), ``None`` when it may."""
    current = version_of(before) if before is not None and is_live(before, now) else 0
    return None if current == if_version else current


def _increment_bounds(amount: int) -> tuple[int, int]:
    """The stored values to which ``amount`` can be added within 64 bits."""
    return max(MIN_INT64, MIN_INT64 - amount), min(MAX_INT64, MAX_INT64 - amount)


def increment_result(key: str, before: Mapping[str, Any] | None, now: datetime, amount: int) -> int:
    """What ``increment`` returns, from the item as it was before: the new value, or the error
    for an item the pipeline left unchanged."""
    if not is_live(before, now):
        return amount
    assert before is not None
    current = _codec.decode(before.get("value"))
    if isinstance(current, bool) or not isinstance(current, int):
        raise TypeError(
            f"cannot increment key {key!r}: its value is a {type(current).__name__}, not an int"
        )
    low, high = _increment_bounds(amount)
    if not low <= current <= high:
        raise ValueError(
            f"cannot increment key {key!r} by {amount}: {current} + {amount} is outside the "
            "64-bit integer range"
        )
    return current + amount


# Fields that exist only while a write pipeline runs.
_LIVE = "__ads_live"
_OK = "__ads_ok"


# The parts of the write pipelines that do not depend on the call, built once. Pipelines are
# only read (by pymongo's encoder or the embedded evaluator), so they share these; a set
# builds about half as many objects, which is most of the layer's pipeline cost.
_LIVE_FIELD = "$" + _LIVE
_CREATED = {"$ne": [{"$type": "$createdAt"}, "missing"]}
_EXPIRY_IS_DATE = {"$eq": [{"$type": "$expiresAt"}, "date"]}
_KEPT_METADATA = {"$cond": [_LIVE_FIELD, "$metadata", {"$literal": {}}]}
_NEXT_VERSION = {"$cond": [_LIVE_FIELD, {"$add": [{"$ifNull": ["$version", 1]}, 1]}, 1]}
_UNSET_LIVE = {"$unset": [_LIVE]}


def _live_expression(now: datetime) -> dict[str, Any]:
    """``is_live`` as an aggregation expression over the stored document. A document an
    upsert is creating holds only the filter's fields, so it has no createdAt."""
    expired = {"$and": [_EXPIRY_IS_DATE, {"$lte": ["$expiresAt", now]}]}
    return {"$and": [_CREATED, {"$not": [expired]}]}


@dataclass(frozen=True, slots=True)
class Write:
    """One write command: the filter (equality on exactly the unique index's fields, so the
    server retries an upsert that races another), the update pipeline, and whether it may
    create the item."""

    filter: dict[str, Any]
    pipeline: list[dict[str, Any]]
    upsert: bool = True


def _write_pipeline(
    now: datetime,
    value: Any,
    expires_at: Any,
    metadata_paths: Mapping[str, Any],
    guard: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """The pipeline that writes ``value`` as an item at ``now``: see ``_pipeline_for``."""
    return _pipeline_for(now, expires_at, metadata_paths, guard)(value)


def _pipeline_for(
    now: datetime,
    expires_at: Any,
    metadata_paths: Mapping[str, Any],
    guard: dict[str, Any] | None,
) -> Callable[[Any], list[dict[str, Any]]]:
    """A function giving the pipeline that writes a value (an expression) at ``now``.

    A live item keeps createdAt and its metadata and goes up one version; otherwise (absent,
    or expired) the item starts again: createdAt now, version 1, empty metadata. Then each
    metadata name is set on its own path, which merges it. With a ``guard``, the item changes
    only where the guard holds: every field is otherwise written back as it was, which MongoDB
    recognises as no change at all.

    Everything but the value is built once, so the items of a ``set_many`` share it: the
    pipelines are only read afterwards, by pymongo's encoder or the embedded evaluator.
    """
    live = _LIVE_FIELD
    if guard is None:  # every set without if_version: the same pipeline, with fewer objects
        return _unguarded_pipeline_for(now, expires_at, metadata_paths)

    def when_ok(new: Any, field_name: str) -> Any:
        return {"$cond": ["$" + _OK, new, "$" + field_name]}

    head = [{"$set": {_LIVE: _live_expression(now)}}, {"$set": {_OK: guard}}]
    next_version = {"$add": [{"$ifNull": ["$version", 1]}, 1]}
    fields = {
        "metadata": when_ok({"$cond": [live, "$metadata", {"$literal": {}}]}, "metadata"),
        "createdAt": when_ok({"$cond": [live, "$createdAt", now]}, "createdAt"),
        "updatedAt": when_ok(now, "updatedAt"),
        "version": when_ok({"$cond": [live, next_version, 1]}, "version"),
        "expiresAt": when_ok(expires_at, "expiresAt"),
    }
    tail: list[dict[str, Any]] = []
    if metadata_paths:
        paths = {
            path: when_ok({"$literal": stored}, path) for path, stored in metadata_paths.items()
        }
        tail.append({"$set": paths})
    tail.append({"$unset": [_LIVE, _OK]})

    def pipeline(value: Any) -> list[dict[str, Any]]:
        return [*head, {"$set": {"value": when_ok(value, "value"), **fields}}, *tail]

    return pipeline


def _unguarded_pipeline_for(
    now: datetime, expires_at: Any, metadata_paths: Mapping[str, Any]
) -> Callable[[Any], list[dict[str, Any]]]:
    """``_pipeline_for`` without a guard: the same stages, field for field, with the parts
    that do not depend on the call shared. ``tests/test_wire_commands.py`` checks the command
    on the wire, and the benchmark (``check_raw_commands``) that it is byte for byte the one
    written out by hand."""
    head = {"$set": {_LIVE: _live_expression(now)}}
    fields = {
        "metadata": _KEPT_METADATA,
        "createdAt": {"$cond": [_LIVE_FIELD, "$createdAt", now]},
        "updatedAt": now,
        "version": _NEXT_VERSION,
        "expiresAt": expires_at,
    }
    if metadata_paths:
        paths = {"$set": {path: {"$literal": stored} for path, stored in metadata_paths.items()}}

        def pipeline(value: Any) -> list[dict[str, Any]]:
            return [head, {"$set": {"value": value, **fields}}, paths, _UNSET_LIVE]

        return pipeline

    def plain_pipeline(value: Any) -> list[dict[str, Any]]:
        return [head, {"$set": {"value": value, **fields}}, _UNSET_LIVE]

    return plain_pipeline


def _version_guard(if_version: int) -> dict[str, Any]:
    """``set_conflict(...) is None`` as an aggregation expression."""
    if if_version == 0:
        return {"$not": ["$" + _LIVE]}
    return {"$and": ["$" + _LIVE, {"$eq": [{"$ifNull": ["$version", 1]}, if_version]}]}


def version_query(if_version: int) -> dict[str, Any]:
    """The query condition of an item at version ``if_version`` (>= 1)."""
    if if_version == 1:  # items written before versions existed are at version 1
        return {"version": {"$in": [1, None]}}
    return {"version": if_version}


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

    # The filters are written out as literals (the same fields, in the same order, as
    # namespace_filter + key + live_query): they are built on every call, and a literal
    # costs a fraction of merging dictionaries. The tests hold them to live_query.

    def live_namespace_filter(self, now: datetime) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "agentName": self.agent_name,
            "namespace": self.namespace,
            "expiresAt": {"$not": {"$lte": now}},
        }

    def item_filter(self, key: str) -> dict[str, str]:
        """The item under ``key``, live or expired: what writes match."""
        return {
            "userId": self.user_id,
            "agentName": self.agent_name,
            "namespace": self.namespace,
            "key": key,
        }

    def live_item_filter(self, key: str, now: datetime) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "agentName": self.agent_name,
            "namespace": self.namespace,
            "key": key,
            "expiresAt": {"$not": {"$lte": now}},
        }

    def keys_filter(
        self, prefix: str | None, now: datetime, start_after: str | None = None
    ) -> dict[str, Any]:
        """Live items whose key starts with ``prefix`` and sorts after ``start_after``. Both
        become bounds on the index's key field, which MongoDB intersects."""
        condition: dict[str, Any] = {}
        if prefix is not None:
            condition["$regex"] = key_prefix_pattern(prefix)
        if start_after is not None:
            condition["$gt"] = start_after
        if not condition:
            return self.live_namespace_filter(now)
        return {**self.namespace_filter, "key": condition, **live_query(now)}

    def many_filter(self, keys: list[str], now: datetime) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "agentName": self.agent_name,
            "namespace": self.namespace,
            "key": {"$in": keys},
            "expiresAt": {"$not": {"$lte": now}},
        }

    def encode_value(
        self,
        key: str,
        value: Any,
        metadata_size: int,
        max_value_bytes: int,
        *,
        expires: bool = False,
    ) -> Any:
        """``value`` as stored; ``ValueError`` if it is over the store's limit or the item
        (with an expiresAt date if it ``expires``) would not fit in one document."""
        return self._encode_item(key, value, metadata_size, max_value_bytes, expires)[0]

    def _encode_item(
        self, key: str, value: Any, metadata_size: int, max_value_bytes: int, expires: bool
    ) -> tuple[Any, int]:
        """``encode_value``, and the size of the item's document."""
        try:
            stored, value_size = _codec.encode(value, 2)
        except TypeError as exc:
            raise TypeError(f"value for key {key!r} is not storable JSON: {exc}") from None
        except _codec.ValueTooLarge as exc:
            # refused before the rest of the value was encoded: its full size is not known
            raise ValueError(
                f"item {key!r} would be a document of over {exc.size - 1} bytes, over "
                f"MongoDB's limit of {MAX_DOCUMENT_BYTES} bytes"
            ) from None
        size = self._fixed_size + _codec.string_size(key) + 5 + value_size + metadata_size
        size += _EXPIRES_AT_SIZE if expires else 0
        if size > MAX_DOCUMENT_BYTES:
            raise ValueError(
                f"item {key!r} would be a {size}-byte document, over MongoDB's limit of "
                f"{MAX_DOCUMENT_BYTES} bytes"
            )
        if value_size > max_value_bytes:
            raise ValueError(
                f"value for key {key!r} is {value_size} bytes, over this store's limit of "
                f"{max_value_bytes} bytes per value"
            )
        return stored, size

    def set_write(
        self,
        key: str,
        value: Any,
        metadata: tuple[dict[str, Any], int],
        now: datetime,
        *,
        ttl: timedelta | None = None,
        if_version: int | None = None,
        max_value_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> Write:
        """The command of ``set(key, value, metadata, ttl=..., if_version=...)``.

        Without a ttl the item does not expire, whatever it had before. With ``if_version``
        the item changes only when ``set_conflict`` finds no conflict; an item that must
        already exist (``if_version`` >= 1) is never created.
        """
        return self.set_writer(metadata, now, ttl=ttl, if_version=if_version)(
            key, value, max_value_bytes
        )

    def set_writer(
        self,
        metadata: tuple[dict[str, Any], int],
        now: datetime,
        *,
        ttl: timedelta | None = None,
        if_version: int | None = None,
    ) -> Callable[[str, Any, int], Write]:
        """``set_write`` for many keys with the same metadata, time, ttl and condition: what
        they share is built once (``set_many`` writes thousands of items this way)."""
        paths, metadata_size = metadata
        expires_at: Any = "$$REMOVE" if ttl is None else now + ttl
        expires = ttl is not None
        upsert = not if_version
        guard = None if if_version is None else _version_guard(if_version)
        pipeline = _pipeline_for(now, expires_at, paths, guard)
        # Below this document size, the statement surely fits: its exact size is measured
        # only above it, so an ordinary item costs one comparison more. Without metadata,
        # every document within 16 MiB fits.
        surely_fits = (
            _SURELY_FITS - _METADATA_NAME_OVERHEAD * len(paths) - metadata_size
            if paths
            else MAX_DOCUMENT_BYTES
        )

        def write(key: str, value: Any, max_value_bytes: int) -> Write:
            stored, size = self._encode_item(key, value, metadata_size, max_value_bytes, expires)
            checked = Write(self.item_filter(key), pipeline({"$literal": stored}), upsert)
            if size > surely_fits:
                _check_statement_size(key, checked)
            return checked

        return write

    def increment_write(
        self, key: str, amount: int, now: datetime, ttl: timedelta | None = None
    ) -> Write:
        """The command of ``increment(key, amount, ttl=...)``: a live integer within reach of
        64 bits goes up by ``amount``; an absent or expired item starts at ``amount``, expiring
        after ``ttl`` if given; anything else is left unchanged (``increment_result`` raises
        for it). A live counter keeps its expiry.

        Its command needs no size check: it holds no value and no metadata, only names and a
        key within their limits, so it is a few kilobytes at most (the tests measure it)."""
        live = "$" + _LIVE
        low, high = _increment_bounds(amount)
        addable = {
            "$and": [
                {"$in": [{"$type": "$value"}, ["int", "long"]]},
                {"$gte": ["$value", low]},
                {"$lte": ["$value", high]},
            ]
        }
        guard = {"$or": [{"$not": [live]}, addable]}
        value = {"$cond": [live, {"$add": ["$value", amount]}, amount]}
        expires_at = {"$cond": [live, "$expiresAt", "$$REMOVE" if ttl is None else now + ttl]}
        return Write(self.item_filter(key), _write_pipeline(now, value, expires_at, {}, guard))


def statement_size(write: Write) -> int:
    """The BSON size of ``write`` as the update statement pymongo sends for it:
    ``{q, u, multi, upsert, collation}``, in ``update_one`` and in a bulk write alike."""
    statement = {
        "q": write.filter,
        "u": write.pipeline,
        "multi": False,
        "upsert": write.upsert,
        "collation": SIMPLE_COLLATION,
    }
    return len(bson.encode(statement))


def _check_statement_size(key: str, write: Write) -> None:
    size = statement_size(write)
    if size > MAX_STATEMENT_BYTES:
        raise ValueError(
            f"item {key!r} would need a {size}-byte update statement, over the limit of "
            f"{MAX_STATEMENT_BYTES} bytes for one write command (besides the item, it carries "
            "the update's expressions, each metadata name again and any if_version condition)"
        )


class Scoped:
    """What every proxy (local or remote, sync or async) shows of its scope: the user, agent
    and namespace of its ``_scope``."""

    __slots__ = ()
    _scope: Scope

    @property
    def user_id(self) -> str:
        return self._scope.user_id

    @property
    def agent_name(self) -> str:
        return self._scope.agent_name

    @property
    def namespace(self) -> str:
        return self._scope.namespace


def key_pattern(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """An index's keys as ``(field, direction)``; directions numeric where they are numbers
    (listIndexes may give 1 as 1.0), left as they are otherwise ("hashed", "text")."""
    return [
        (name, int(direction) if isinstance(direction, (int, float)) else direction)
        for name, direction in spec.get("key", [])
    ]


def _keys_text(keys: list[tuple[str, int]]) -> str:
    return "(" + ", ".join(name for name, _ in keys) + ")"


def why_not_equivalent_index(spec: Mapping[str, Any]) -> str | None:
    """Why an index from ``index_information()`` is not the store's unique index (whatever its
    name), or ``None`` when it is.

    The store needs an index that every query can use and that keeps one document per key
    across the whole collection. So besides its keys, uniqueness and binary collation, an
    index is refused when it is hidden (the planner ignores it: every call would scan the
    collection, although the server still enforces its uniqueness), partial (unique only among
    the documents that match its filter, and used only by queries that imply that filter) or
    sparse (unique only among the documents that hold one of its fields, and refused by the
    planner for queries that could need the others)."""
    if key_pattern(spec) != INDEX_KEYS:
        return f"is not on {_keys_text(INDEX_KEYS)} ascending"
    if not spec.get("unique"):
        return "is not unique"
    collation = spec.get("collation") or SIMPLE_COLLATION
    if collation.get("locale") != "simple":
        return f"compares strings by the {collation.get('locale')!r} collation, not binary"
    if spec.get("hidden"):
        return "is hidden: queries cannot use it"
    if "partialFilterExpression" in spec:
        return "is partial: it is unique only among the documents its filter selects"
    if spec.get("sparse"):
        return "is sparse: it leaves documents out, and queries may not use it"
    return None


def is_equivalent_index(spec: Mapping[str, Any]) -> bool:
    """Whether an index from ``index_information()`` is the store's unique index, whatever
    its name (``why_not_equivalent_index`` says why not)."""
    return why_not_equivalent_index(spec) is None


def why_not_expiry_index(spec: Mapping[str, Any]) -> str | None:
    """Why an index from ``index_information()`` does not delete every item at its expiresAt,
    or ``None`` when it does.

    What matters to the TTL monitor: a single-field index on expiresAt with
    ``expireAfterSeconds`` 0 (another number deletes items later than their expiry says), and
    no ``partialFilterExpression`` (the monitor deletes only the documents the filter
    selects). A hidden TTL index still deletes (MongoDB's manual, "Hidden Indexes"), and
    whether it is sparse does not matter: documents without a date never expire."""
    if key_pattern(spec) != TTL_INDEX_KEYS:
        return f"is not on {_keys_text(TTL_INDEX_KEYS)} ascending"
    if "expireAfterSeconds" not in spec:
        return "is not a TTL index (no expireAfterSeconds)"
    if spec.get("expireAfterSeconds") != 0:
        return (
            f"has expireAfterSeconds {spec.get('expireAfterSeconds')}, not 0: items would "
            "be deleted later than they expire"
        )
    if "partialFilterExpression" in spec:
        return "is partial: it deletes only the documents its filter selects"
    return None


def is_expiry_index(spec: Mapping[str, Any]) -> bool:
    """Whether an index from ``index_information()`` deletes items at their expiresAt
    (``why_not_expiry_index`` says why not)."""
    return why_not_expiry_index(spec) is None


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
    decode = _codec.decode
    found = {doc["key"]: decode(doc.get("value")) for doc in documents}
    # The server answers in index order: keys asked in that order, all found (a page of
    # list_keys read back, say), need no reordering.
    if len(found) == len(keys) and list(found) == keys:
        return found
    return {key: found[key] for key in keys if key in found}
