"""Every store operation, written once, without I/O.

An operation is a generator: it checks its arguments, yields the ``Command`` (one driver call)
it needs, receives the driver's reply (or, thrown into it, the driver's exception), and
returns the result the caller sees. The synchronous proxy runs operations with pymongo's
``MongoClient`` and the asynchronous one with ``AsyncMongoClient`` (``run_sync`` here and
``run_async`` in ``_async``); those runners are the only code that touches a collection, and
the one place where driver errors are translated into this package's errors. So validation,
encoding, the command each call sends, its retries and the reading of its reply are the same
for both, by construction.

The rules the operations apply (limits, filters, the update pipelines) are in ``_core``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from bson.errors import InvalidBSON, InvalidDocument
from pymongo import AsyncMongoClient, IndexModel, MongoClient, ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from . import _core, _filters
from ._exceptions import DataStoreError, VersionConflict, translate
from ._items import (
    ITEM_INFO_PROJECTION,
    ITEM_PROJECTION,
    Item,
    ItemInfo,
    item_from_document,
    item_info_from_document,
)

__all__ = [
    "ANSWER_SIZE",
    "DRIVER_ERRORS",
    "Command",
    "FoundItem",
    "Operation",
    "Settings",
    "run_sync",
    "take_within",
]

T = TypeVar("T")

DRIVER_ERRORS = (PyMongoError, InvalidDocument, InvalidBSON)

_SIMPLE = _core.SIMPLE_COLLATION
_VALUE_ONLY = {"value": 1, "_id": 0}
_KEY_ONLY = {"key": 1, "_id": 0}
_KEY_AND_VALUE = {"key": 1, "value": 1, "_id": 0}
_VERSION_ONLY = {"version": 1, "createdAt": 1, "expiresAt": 1, "_id": 0}
_COUNTER_STATE = {"value": 1, "createdAt": 1, "expiresAt": 1, "_id": 0}
_BY_KEY = [("key", 1)]
_DUPLICATE_KEY = 11000
# The same index exists under another name (85), or with other options (86).
_INDEX_CONFLICTS = frozenset({85, 86})


# Command and Settings are named tuples rather than frozen dataclasses: one of each is made
# on every call, and a named tuple is made in a third of the time. Both are immutable.


class Command(NamedTuple):
    """One call of a collection method. ``keys`` names the items it writes, so an error can
    say which one it was about. A ``find`` or an ``aggregate`` is answered with the list of
    its documents, read batch by batch from its cursor; with ``max_bytes``, with
    ``(documents, complete)`` as ``take_within`` reads them."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = MappingProxyType({})
    keys: tuple[str, ...] = ()
    max_bytes: int = 0


# What a bounded find's projection adds to each document: the bytes it stands for in an
# answer, as the server measures them ($bsonSize), so that the reader can stop in time.
ANSWER_SIZE = "answerSize"


def take_within(cursor: Iterable[Mapping[str, Any]], max_bytes: int) -> tuple[list[Any], bool]:
    """The documents of ``cursor`` whose ``ANSWER_SIZE`` adds up to at most ``max_bytes``
    (always the first, however large), and whether they are all of them. The cursor is read
    lazily, batch by batch, and closed as soon as the next document would not fit, so the
    reader never holds much more than ``max_bytes`` plus one batch."""
    documents: list[Any] = []
    total = 0
    for document in cursor:
        total += document.get(ANSWER_SIZE) or 0
        if documents and total > max_bytes:
            close = getattr(cursor, "close", None)
            if close is not None:
                close()
            return documents, False
        documents.append(document)
    return documents, True


Operation = Generator[Command, Any, T]

# The methods whose reply is a cursor, which the runners read to its end (or to max_bytes).
_CURSOR_METHODS = frozenset({"find", "aggregate"})


class Settings(NamedTuple):
    """What an operation needs of its store: its time and its value size limit."""

    now: datetime
    max_value_bytes: int


def run_sync(operation: Operation[T], collection: Callable[[], Any]) -> T:
    """Run ``operation`` with the pymongo ``Collection``-like object that ``collection()``
    returns for each command.

    Each reply (or, thrown in, the driver's error) goes back to the operation; a driver error
    the operation lets through is translated here, naming the items of the command that
    failed. ``_async.run_async`` is the same loop with each call awaited: it is written out in
    both rather than shared through a helper object, because it runs on every call and most
    operations are one command, for which that object was a measurable part of the cost.
    """
    reply: Any = None
    failure: BaseException | None = None
    keys: tuple[str, ...] = ()
    while True:
        try:
            command = operation.send(reply) if failure is None else operation.throw(failure)
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]
        except DRIVER_ERRORS as exc:  # the operation did not handle it: translate it
            raise translate(exc, keys) from exc
        keys, failure = command.keys, None
        target = None
        try:
            target = collection()
            reply = _call(target, command)
        except ServerSelectionTimeoutError as exc:
            reply, failure = _select_again(exc, target, collection, command)
        except DRIVER_ERRORS as exc:
            reply, failure = None, exc


def _call(target: Any, command: Command) -> Any:
    reply = getattr(target, command.method)(*command.args, **command.kwargs)
    if command.method in _CURSOR_METHODS:
        return take_within(reply, command.max_bytes) if command.max_bytes else _drain(reply)
    return reply


def _select_again(
    exc: ServerSelectionTimeoutError, target: Any, collection: Callable[[], Any], command: Command
) -> tuple[Any, BaseException | None]:
    """After no server could be selected for ``command`` (so it was not sent): the same
    command again while the deployment elects a primary (``failover_deadline``); the reply,
    or the error to throw into the operation."""
    deadline = failover_deadline(target)
    while deadline is not None and members_answer(target) and time.monotonic() < deadline:
        try:
            target = collection()
            return _call(target, command), None
        except ServerSelectionTimeoutError as again:
            exc = again
        except DRIVER_ERRORS as other:
            return None, other
    return None, exc


def failover_deadline(target: Any) -> float | None:
    """Until when (``time.monotonic``) a command that found no server to send to selects
    again, as long as members of the deployment answer (``members_answer``); ``None`` for a
    collection that is not on a pymongo client.

    The window starts when the first selection did (the client's ``serverSelectionTimeoutMS``
    ago) and lasts ``_core.FAILOVER_WINDOW_MS``, or the client's ``timeoutMS`` when it has one
    (0: no limit), so that a call waits out an election but not a database that is away.
    """
    client = getattr(getattr(target, "database", None), "client", None)
    if not isinstance(client, _CLIENTS):  # the embedded fake, or a stand-in
        return None
    options = client.options
    timeout: float | None = options.timeout
    window = _core.FAILOVER_WINDOW_MS / 1000 if timeout is None else timeout or math.inf
    selection: float = options.server_selection_timeout
    return time.monotonic() - selection + window


_CLIENTS = (MongoClient, AsyncMongoClient)


def members_answer(target: Any) -> bool:
    """Whether a member of the deployment answered its monitor last time (its type is known:
    a secondary, an arbiter, a member between states): a replica set without a primary that
    is electing one. When nothing answers (every server Unknown, with the connection error),
    the database is away and waiting longer would only delay the 503."""
    description = target.database.client.topology_description
    return bool(description.has_known_servers)


def _drain(cursor: Any) -> list[Any]:
    """Every document of a ``find`` or an ``aggregate``. pymongo's cursors' ``to_list`` takes
    each batch whole, where iterating costs a call per document (12 us of a 100-document
    ``get_many``); the embedded store and stand-ins give plain iterators or lists."""
    to_list = getattr(cursor, "to_list", None)
    return to_list() if to_list is not None else list(cursor)


# -------------------------------------------------------------------------------- indexes


# The store's two indexes: keys, the options they are created with, and what says whether an
# index already there (under any name) serves as it.
_STORE_INDEXES: tuple[
    tuple[list[tuple[str, int]], dict[str, Any], Callable[..., str | None]], ...
] = (
    (
        _core.INDEX_KEYS,
        {"name": _core.INDEX_NAME, "unique": True, "collation": _SIMPLE},
        _core.why_not_equivalent_index,
    ),
    (
        _core.TTL_INDEX_KEYS,
        {"name": _core.TTL_INDEX_NAME, "expireAfterSeconds": 0, "sparse": True},
        _core.why_not_expiry_index,
    ),
)
# The server stopped a bounded build at its maxTimeMS (50, MaxTimeMSExpired), or, in a
# transaction only, found the same build under way (276, IndexBuildAlreadyInProgress; outside
# one, the server waits for that build itself, within the same bound).
_BUILD_CUT_OFF = frozenset({50, 276})


def _missing(indexes: Mapping[str, Mapping[str, Any]]) -> list[IndexModel]:
    """The store's indexes that no index of ``indexes`` (``index_information()``) serves."""
    specs = list(indexes.values())
    return [
        IndexModel(keys, **options)
        for keys, options, why_not in _STORE_INDEXES
        if not any(why_not(spec) is None for spec in specs)
    ]


def index_conflicts(indexes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why the indexes of ``indexes`` that have the keys of one of the store's indexes, or its
    name, do not serve as it: one sentence each, naming the index. Empty when each of the
    store's indexes is served (or simply absent)."""
    reasons: list[str] = []
    for keys, options, why_not in _STORE_INDEXES:
        if any(why_not(spec) is None for spec in indexes.values()):
            continue
        kind = "unique index" if options.get("unique") else "TTL index"
        for name, spec in indexes.items():
            if _core.key_pattern(spec) == keys or name == options["name"]:
                reasons.append(f"{kind} {name!r} {why_not(spec)}")
    return reasons


def _create_missing(max_time_ms: int | None) -> Operation[bool]:
    """One ``listIndexes``; then, for the store's indexes that are not there under any name,
    one ``createIndexes`` (bounded by ``max_time_ms``, if given). Whether both indexes are in
    place at the end: ``False`` only when the server cut the build off at its bound.

    A conflicting index (the same name or keys with other options: codes 85 and 86) raises
    ``DataStoreError`` saying why the one there does not serve, unless listing again finds
    the store's indexes made meanwhile by someone else."""
    indexes = yield Command("index_information")
    missing = _missing(indexes)
    if not missing:
        return True
    options: dict[str, Any] = {} if max_time_ms is None else {"maxTimeMS": max_time_ms}
    try:
        yield Command("create_indexes", (missing,), options)
    except OperationFailure as exc:
        if max_time_ms is not None and exc.code in _BUILD_CUT_OFF:
            return False
        if exc.code not in _INDEX_CONFLICTS:
            raise
        indexes = yield Command("index_information")
        if _missing(indexes):
            reasons = "; ".join(index_conflicts(indexes)) or "an index of the same name or keys"
            raise DataStoreError(
                f"the collection has an index that does not serve as the store's: {reasons} "
                f"(the server said: {exc}). Drop it, or see agent-datastore doctor"
            ) from exc
    return True


def prepare_indexes() -> Operation[bool]:
    """A store's first use: whether its indexes are in place, creating the missing ones within
    ``_core.FIRST_USE_INDEX_BUILD_MS``. One ``listIndexes`` when both are there; else one
    bounded ``createIndexes`` too. ``False`` when the build was cut off at that bound (the
    server then aborts it): the caller goes on without the indexes and tries again later."""
    return (yield from _create_missing(_core.FIRST_USE_INDEX_BUILD_MS))


def ensure_indexes() -> Operation[None]:
    """Create the unique index and the TTL index where missing, waiting for the build as long
    as the store's own time limit allows; accept them already made under other names (an
    operator's), refuse an index of the same name or keys that does not serve."""
    yield from _create_missing(None)


def missing_indexes() -> Operation[list[str]]:
    """The names of the store's indexes that the collection lacks, under any name (empty
    when both are in place). One ``listIndexes`` command, which reads no document: cheap
    enough for a readiness probe, and it fails as any command does when the server is away."""
    indexes = yield Command("index_information")
    return [model.document["name"] for model in _missing(indexes)]


# ---------------------------------------------------------------------------- operations


def get(scope: _core.Scope, settings: Settings, key: object, default: Any) -> Operation[Any]:
    item_filter = scope.live_item_filter(_core.check_key(key), settings.now)
    document = yield Command("find_one", (item_filter, _VALUE_ONLY), {"collation": _SIMPLE})
    return _core.value_of(document, default)


def get_item(scope: _core.Scope, settings: Settings, key: object) -> Operation[Item | None]:
    item_filter = scope.live_item_filter(_core.check_key(key), settings.now)
    document = yield Command("find_one", (item_filter, ITEM_PROJECTION), {"collation": _SIMPLE})
    return None if document is None else item_from_document(document)


def _upsert_once_more(command: Command) -> Operation[Any]:
    """Send ``command``; when it loses an insert race to another client (servers before 4.2
    do not retry that themselves), the item exists now, so the same command updates it."""
    try:
        return (yield command)
    except DuplicateKeyError:
        return (yield command)


def put(
    scope: _core.Scope,
    settings: Settings,
    key: object,
    value: Any,
    metadata: object,
    ttl: object,
    if_version: object,
) -> Operation[None]:
    """``set``: the name would hide the builtin here."""
    checked_key = _core.check_key(key)
    checked_metadata = _core.check_metadata(metadata)
    checked_ttl = _core.check_ttl(ttl)
    expected = _core.check_if_version(if_version)
    write = scope.set_write(
        checked_key,
        value,
        checked_metadata,
        settings.now,
        ttl=checked_ttl,
        if_version=expected,
        max_value_bytes=settings.max_value_bytes,
    )
    options = {"upsert": write.upsert, "collation": _SIMPLE}
    keys = (checked_key,)
    if expected is None:
        yield from _upsert_once_more(
            Command("update_one", (write.filter, write.pipeline), options, keys)
        )
        return
    options.update(projection=_VERSION_ONLY, return_document=ReturnDocument.BEFORE)
    command = Command("find_one_and_update", (write.filter, write.pipeline), options, keys)
    before = yield from _upsert_once_more(command)
    current = _core.set_conflict(before, settings.now, expected)
    if current is not None:
        raise VersionConflict(checked_key, expected, current)


def increment(
    scope: _core.Scope, settings: Settings, key: object, amount: object, ttl: object
) -> Operation[int]:
    checked_key = _core.check_key(key)
    checked_amount = _core.check_amount(amount)
    checked_ttl = _core.check_ttl(ttl)
    write = scope.increment_write(checked_key, checked_amount, settings.now, checked_ttl)
    options = {
        "projection": _COUNTER_STATE,
        "upsert": True,
        "return_document": ReturnDocument.BEFORE,
        "collation": _SIMPLE,
    }
    command = Command(
        "find_one_and_update", (write.filter, write.pipeline), options, (checked_key,)
    )
    before = yield from _upsert_once_more(command)
    return _core.increment_result(checked_key, before, settings.now, checked_amount)


def delete(
    scope: _core.Scope, settings: Settings, key: object, if_version: object
) -> Operation[bool]:
    checked_key = _core.check_key(key)
    expected = _core.check_if_version(if_version)
    now = settings.now
    live_filter = scope.live_item_filter(checked_key, now)
    if expected is None:
        # Live or expired, the document goes: an expired one would otherwise wait for the
        # TTL monitor. Only a live one counts as deleted.
        document = yield Command(
            "find_one_and_delete",
            (scope.item_filter(checked_key),),
            {"projection": _VERSION_ONLY, "collation": _SIMPLE},
        )
        return _core.is_live(document, now)
    find_version = Command("find_one", (live_filter, _VERSION_ONLY), {"collation": _SIMPLE})
    if expected == 0:
        document = yield find_version
        if document is not None:
            raise VersionConflict(checked_key, 0, _core.version_of(document))
        return False
    conditional = {**live_filter, **_core.version_query(expected)}
    result = yield Command("delete_one", (conditional,), {"collation": _SIMPLE})
    if result.deleted_count:
        return True
    # The conditional delete alone decided; this read only tells the caller why.
    document = yield find_version
    raise VersionConflict(
        checked_key, expected, 0 if document is None else _core.version_of(document)
    )


def keys_filter(
    scope: _core.Scope, settings: Settings, prefix: object, start_after: object
) -> dict[str, Any]:
    checked_prefix = _core.check_prefix(prefix)
    checked_start = _core.check_prefix(start_after, "start_after")
    return scope.keys_filter(checked_prefix, settings.now, checked_start)


def key_page(keys_filter: dict[str, Any], limit: int) -> Operation[list[str]]:
    options = {
        "sort": _BY_KEY,
        "limit": limit,
        "batch_size": _core.LISTING_BATCH_SIZE,
        "collation": _SIMPLE,
    }
    documents = yield Command("find", (keys_filter, _KEY_ONLY), options)
    return [document["key"] for document in documents]


def list_keys(
    scope: _core.Scope, settings: Settings, prefix: object, limit: object, start_after: object
) -> Operation[list[str]]:
    page_filter = keys_filter(scope, settings, prefix, start_after)
    return (yield from key_page(page_filter, _core.check_limit(limit)))


def next_page_start(page: list[str]) -> str | None:
    """Where ``iter_keys`` goes on after ``page``; ``None`` when it was the last one."""
    return page[-1] if len(page) == _core.KEY_PAGE_SIZE else None


def _items_page(
    scope: _core.Scope,
    settings: Settings,
    prefix: object,
    limit: object,
    start_after: object,
    projection: Mapping[str, Any],
    max_bytes: int = 0,
) -> Command:
    """The ``find`` of one ``list_items`` page, with ``projection``."""
    page_filter = keys_filter(scope, settings, prefix, start_after)
    options = {
        "sort": _BY_KEY,
        "limit": _core.check_limit(limit),
        "batch_size": _core.LISTING_BATCH_SIZE,
        "collation": _SIMPLE,
    }
    return Command("find", (page_filter, projection), options, max_bytes=max_bytes)


def list_items(
    scope: _core.Scope, settings: Settings, prefix: object, limit: object, start_after: object
) -> Operation[list[ItemInfo]]:
    command = _items_page(scope, settings, prefix, limit, start_after, ITEM_INFO_PROJECTION)
    documents = yield command
    return [item_info_from_document(document) for document in documents]


# ------------------------------------------------------------------------------ listings
#
# Listings of distinct values (the users of a store, the agents of a user, the namespaces of
# an agent) read through an aggregation cursor, batch by batch: a ``distinct`` answers in one
# reply, which fails past 16 MiB (error 17217).

_INDEX_FIELDS = tuple(name for name, _ in _core.INDEX_KEYS)
_LISTING_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"collation": _SIMPLE, "batchSize": _core.LISTING_BATCH_SIZE}
)
_NAMESPACE_ONLY = {"namespace": 1, "_id": 0}
_FIRST_IN_INDEX_ORDER: Mapping[str, Any] = MappingProxyType(
    {"sort": _core.INDEX_KEYS, "limit": 1, "collation": _SIMPLE}
)
# Namespaces are at most 512 bytes: a thousand of them keep a query far below 16 MiB.
_UNCERTAIN_PER_QUERY = 1_000


def first_of_each_pipeline(
    scope_filter: Mapping[str, str], first: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The aggregation that yields one ``{"_id": value}`` per distinct value of the index field
    that follows ``scope_filter`` (equalities on a prefix of the index: ``{}``, ``{userId}``
    or ``{userId, agentName}``), with the fields named in ``first`` taken from the first
    document of that value in index order.

    ``$match`` on the prefix, ``$sort`` in index order, ``$group`` on the next field with only
    ``$first``: the shape the server's planner runs as a DISTINCT_SCAN of the unique index
    (SERVER-9507), which seeks from one value to the next, so the work follows the number of
    values, not of documents. The server's order of the groups is not relied on."""
    depth = len(scope_filter)
    if list(scope_filter) != list(_INDEX_FIELDS[:depth]) or depth > len(_INDEX_FIELDS) - 2:
        raise ValueError(f"not a prefix of the index before its last field: {list(scope_filter)}")
    field = _INDEX_FIELDS[depth]
    # $first needs a defined first document: the whole index order, down to the key
    order = _INDEX_FIELDS if first else _INDEX_FIELDS[: depth + 1]
    group: dict[str, Any] = {"_id": "$" + field}
    group.update((name, {"$first": "$" + name}) for name in first)
    match = [{"$match": dict(scope_filter)}] if scope_filter else []
    return [*match, {"$sort": dict.fromkeys(order, 1)}, {"$group": group}]


def distinct_values(scope_filter: Mapping[str, str]) -> Operation[list[str]]:
    """The values of the index field that follows ``scope_filter`` (see
    ``first_of_each_pipeline``) held by at least one document, live or expired, sorted: the
    users of a store for ``{}``, the agents of a user for ``{"userId": ...}``."""
    groups = yield Command("aggregate", (first_of_each_pipeline(scope_filter),), _LISTING_OPTIONS)
    return sorted(group["_id"] for group in groups if isinstance(group.get("_id"), str))


# The $sort and $group of list_namespaces, the same for every agent: built once, as they are
# on every call's path.
_ANY_AGENT = {"userId": "", "agentName": ""}
_NAMESPACES_AFTER_MATCH = first_of_each_pipeline(_ANY_AGENT, ("expiresAt",))[1:]


def list_namespaces(scope: _core.Scope, settings: Settings) -> Operation[list[str]]:
    """The namespaces of the agent that hold a live item, sorted.

    One aggregation finds each namespace and the expiry of its first item by key, reading one
    document per namespace (``first_of_each_pipeline``). A namespace whose first item is live
    is listed. Only when a first item has expired but the TTL monitor has not deleted it yet
    is the namespace uncertain; those are settled by ``_settle_uncertain``, with the same
    live condition as every read. docs/schema.md, "Listings", has the reasoning."""
    now = settings.now
    agent = {"userId": scope.user_id, "agentName": scope.agent_name}
    pipeline = [{"$match": agent}, *_NAMESPACES_AFTER_MATCH]
    groups = yield Command("aggregate", (pipeline,), _LISTING_OPTIONS)
    live: list[str] = []
    uncertain: list[str] = []
    for group in groups:
        name = group.get("_id")
        if isinstance(name, str):
            (live if _surely_live(group.get("expiresAt"), now) else uncertain).append(name)
    if uncertain:
        live += yield from _settle_uncertain(agent, sorted(uncertain), now)
    return sorted(live)


def _surely_live(expires_at: object, now: datetime) -> bool:
    """Whether an item whose ``expiresAt`` holds this is live by ``_core.live_query``: no date
    (missing, null, anything else) never expires, a date after ``now`` has not yet. An array,
    which the store never writes, is expired by the query once any date in it has passed: it
    is left to the server to decide, as is a date that has passed."""
    if isinstance(expires_at, datetime):
        return _core.as_utc(expires_at) > now
    return not isinstance(expires_at, list)


def _settle_uncertain(
    agent: Mapping[str, str], uncertain: list[str], now: datetime
) -> Operation[list[str]]:
    """Which of the ``uncertain`` namespaces (sorted, at most ``_UNCERTAIN_PER_QUERY`` asked at
    a time) hold a live item.

    Each ``find`` walks the index over the uncertain namespaces in order and stops at the
    first live item: the namespaces before it hold none, its own is live, and the next
    ``find`` asks about those after it. Each expired item the TTL monitor has left is read at
    most once, so the work follows that backlog, not the agent's items."""
    found: list[str] = []
    for start in range(0, len(uncertain), _UNCERTAIN_PER_QUERY):
        remaining = uncertain[start : start + _UNCERTAIN_PER_QUERY]
        while remaining:
            query = {**agent, "namespace": {"$in": remaining}, **_core.live_query(now)}
            documents = yield Command("find", (query, _NAMESPACE_ONLY), _FIRST_IN_INDEX_ORDER)
            if not documents:
                break
            name = documents[0].get("namespace")
            if not isinstance(name, str):  # pragma: no cover - an array written by hand
                break  # matched $in through one of its elements: which one is not known
            found.append(name)
            # simple collation: the index orders strings by UTF-8 bytes, which is Python's
            # order of code points
            remaining = [other for other in remaining if other > name]
    return found


def clear(scope: _core.Scope, settings: Settings) -> Operation[int]:
    result = yield Command(
        "delete_many", (scope.live_namespace_filter(settings.now),), {"collation": _SIMPLE}
    )
    return int(result.deleted_count)


def get_many(scope: _core.Scope, settings: Settings, keys: object) -> Operation[dict[str, Any]]:
    checked = _core.check_keys(keys)
    if not checked:
        return {}
    options = {"batch_size": _core.LISTING_BATCH_SIZE, "collation": _SIMPLE}
    query = scope.many_filter(checked, settings.now)
    documents = yield Command("find", (query, _KEY_AND_VALUE), options)
    return _core.values_by_key(documents, checked)


def delete_many(scope: _core.Scope, settings: Settings, keys: object) -> Operation[int]:
    checked = _core.check_keys(keys, "delete_many")
    if not checked:
        return 0
    # Only live items match, so that deleted_count is the answer in one command: the items
    # that were there for every reader, as delete(key) counts them. An expired item left in
    # place changes nothing anyone sees: every read already skips it, every write treats it
    # as absent, and the TTL monitor deletes it (clear leaves expired items the same way).
    # Deleting expired items too would need a second command, or a count that includes them.
    query = scope.many_filter(checked, settings.now)
    result = yield Command("delete_many", (query,), {"collation": _SIMPLE})
    return int(result.deleted_count)


def existing_keys(scope: _core.Scope, settings: Settings, keys: object) -> Operation[list[str]]:
    """Those of ``keys`` (checked as ``get_many`` checks them) whose items are live, in the
    order asked: what ``delete_many`` of them would count now. One query that reads no
    value, for an operator who looks before deleting."""
    checked = _core.check_keys(keys, "delete_many")
    if not checked:
        return []
    options = {"batch_size": _core.LISTING_BATCH_SIZE, "collation": _SIMPLE}
    query = scope.many_filter(checked, settings.now)
    documents = yield Command("find", (query, _KEY_ONLY), options)
    found = {document.get("key") for document in documents}
    return [key for key in checked if key in found]


def set_many(
    scope: _core.Scope, settings: Settings, items: object, metadata: object, ttl: object
) -> Operation[int]:
    checked_items = _core.check_items(items)
    checked_metadata = _core.check_metadata(metadata)
    checked_ttl = _core.check_ttl(ttl)
    keys: list[str] = []
    requests: list[UpdateOne] = []
    writer = scope.set_writer(checked_metadata, settings.now, ttl=checked_ttl)
    for raw_key, value in checked_items.items():
        key = _core.check_key(raw_key)
        write = writer(key, value, settings.max_value_bytes)
        keys.append(key)
        requests.append(UpdateOne(write.filter, write.pipeline, upsert=True, collation=_SIMPLE))
    if not requests:
        return 0
    try:
        yield Command("bulk_write", (requests,), {"ordered": False}, tuple(keys))
    except BulkWriteError as exc:
        resend = _racing_upserts(exc, requests)
        resent_keys = tuple(keys[requests.index(request)] for request in resend)
        yield Command("bulk_write", (resend,), {"ordered": False}, resent_keys)
    return len(requests)


def _racing_upserts(exc: BulkWriteError, requests: list[UpdateOne]) -> list[UpdateOne]:
    """The upserts of a failed batch that lost an insert race, to send again; re-raises
    ``exc`` if anything else went wrong."""
    details = exc.details or {}
    errors = details.get("writeErrors") or []
    if not errors or details.get("writeConcernErrors"):
        raise exc
    if any(error.get("code") != _DUPLICATE_KEY for error in errors):
        raise exc
    return [requests[error["index"]] for error in errors]


# --------------------------------------------------------------- across namespaces
#
# A search across the namespaces of one user's agent, and the expiry refresh of what it found:
# what the LangGraph store (integrations.langgraph) needs of the store, and the store service
# serves for it. Each is one command.


class FoundItem(NamedTuple):
    """An item found by ``find_items``, with the namespace it is in."""

    namespace: str
    item: Item


_FOUND_ITEM = {**ITEM_PROJECTION, "namespace": 1}
_BY_NAMESPACE_AND_KEY = [("namespace", 1), ("key", 1)]


def _found_items_command(
    scope: _core.Scope,
    settings: Settings,
    within: object,
    keys: object,
    value_filter: object,
    limit: object,
    offset: object,
    projection: Mapping[str, Any],
    max_bytes: int = 0,
    max_time_ms: int | None = None,
) -> Command:
    """The ``find`` of ``find_items``, with ``projection``."""
    checked_offset = _core.check_offset(offset)
    checked_limit = _core.check_limit(limit)
    if checked_offset + checked_limit > _core.MAX_INT64:
        # a router sends its shards limit + skip, which must be a 64-bit integer
        raise ValueError(f"offset + limit must be at most {_core.MAX_INT64}")
    query: dict[str, Any] = {"userId": scope.user_id, "agentName": scope.agent_name}
    query.update(_core.namespace_condition(scope.namespace, within))
    if keys is not None:
        query["key"] = {"$in": _core.check_keys(keys, "find_items")}
    condition = _filters.value_query(value_filter)
    if condition:
        query["$and"] = [condition]
    query.update(_core.live_query(settings.now))  # last, as in every read
    options = {
        # the index's order after userId and agentName: the scan gives it, no sort stage
        "sort": _BY_NAMESPACE_AND_KEY,
        "skip": checked_offset,
        "limit": checked_limit,
        "batch_size": _core.LISTING_BATCH_SIZE,
        "collation": _SIMPLE,
    }
    if max_time_ms is not None:
        options["max_time_ms"] = max_time_ms
    return Command("find", (query, projection), options, max_bytes=max_bytes)


def _found(document: Mapping[str, Any]) -> FoundItem:
    return FoundItem(document["namespace"], item_from_document(document))


def find_items(
    scope: _core.Scope,
    settings: Settings,
    *,
    within: object,
    keys: object = None,
    value_filter: object = None,
    limit: object = None,
    offset: object = 0,
) -> Operation[list[FoundItem]]:
    """The live items of ``scope``'s user and agent in the namespaces ``within`` names
    (``_core.WITHIN``: ``scope.namespace``, it and those below it, or all), among ``keys``
    if given (checked as ``get_many`` checks them), whose values match ``value_filter`` (a
    LangGraph filter, ``_filters.value_query``), sorted by namespace then key (UTF-8 byte
    order), ``offset`` of them skipped, at most ``limit`` (``None``: all).

    One ``find``, served by the unique index: equalities on user and agent, the namespace
    point or prefix, the keys; the rest is checked on the documents the scan reaches."""
    command = _found_items_command(
        scope, settings, within, keys, value_filter, limit, offset, _FOUND_ITEM
    )
    documents = yield command
    return [_found(document) for document in documents]


def refresh_expiry(
    scope: _core.Scope, settings: Settings, items: object, ttl_field: object
) -> Operation[int]:
    """Restart the expiry of ``items`` (``(namespace, key)`` pairs of ``scope``'s user and
    agent) that are live and expire: each then expires ``metadata[ttl_field]`` milliseconds
    from now, where that is a number of milliseconds within ``_core.MAX_TTL``; items without
    one are left as they are. ``updatedAt`` and ``version`` do not change: the item is not
    written, only its expiry moved. The number of items changed; no command for no items.

    One ``update`` of many documents whose pipeline reads each one's own length, so that
    items of different lengths need no command each."""
    by_namespace = _core.check_found_items(items)
    name = _core.check_metadata_name(ttl_field, "ttl_field")
    if not by_namespace:
        return 0
    path = "metadata." + name
    # Every condition in each branch: a rooted $or is planned branch by branch (SUBPLAN),
    # each on the unique index. expiresAt a date after now: live, and expiring (a date never
    # compares with a number). The length a whole number of milliseconds as check_ttl makes
    # them, and not an array, whose elements could meet the two bounds separately and which
    # $add would refuse, failing the whole update part-way.
    branches = [
        {
            "userId": scope.user_id,
            "agentName": scope.agent_name,
            "namespace": namespace,
            "key": {"$in": keys},
            "expiresAt": {"$gt": settings.now},
            path: {"$gte": 1, "$lte": _MAX_TTL_MS, "$not": {"$type": "array"}},
        }
        for namespace, keys in by_namespace.items()
    ]
    query: dict[str, Any] = branches[0] if len(branches) == 1 else {"$or": branches}
    pipeline = [{"$set": {"expiresAt": {"$add": [settings.now, "$" + path]}}}]
    result = yield Command("update_many", (query, pipeline), {"collation": _SIMPLE})
    return int(result.modified_count)


_MAX_TTL_MS = _core.MAX_TTL // timedelta(milliseconds=1)


# ------------------------------------------------------------------ for the store service
#
# The store service answers over HTTP, and no answer may hold more than its byte budget. These
# variants of the reads above send the same filters, and add to each document the size it
# stands for ($bsonSize), so that the service can bound what it reads and encode large
# answers off its event loop. Each is still one command.

_SIZE_OF_ROOT = {"$bsonSize": "$$ROOT"}
_SIZED_VALUE = {**_VALUE_ONLY, ANSWER_SIZE: _SIZE_OF_ROOT}
_SIZED_ITEM = {**ITEM_PROJECTION, ANSWER_SIZE: _SIZE_OF_ROOT}
_SIZED_KEY_AND_VALUE = {**_KEY_AND_VALUE, ANSWER_SIZE: _SIZE_OF_ROOT}
# list_items answers details, not values: what it holds of a document is its metadata
_SIZED_ITEM_INFO = {**ITEM_INFO_PROJECTION, ANSWER_SIZE: {"$bsonSize": "$metadata"}}


def _answer_size(document: Mapping[str, Any] | None) -> int:
    return 0 if document is None else int(document.get(ANSWER_SIZE) or 0)


def sized_get(
    scope: _core.Scope, settings: Settings, key: object, default: Any
) -> Operation[tuple[Any, int]]:
    """``get``, and the stored size of the item found (0 if none)."""
    item_filter = scope.live_item_filter(_core.check_key(key), settings.now)
    document = yield Command("find_one", (item_filter, _SIZED_VALUE), {"collation": _SIMPLE})
    return _core.value_of(document, default), _answer_size(document)


def sized_get_item(
    scope: _core.Scope, settings: Settings, key: object
) -> Operation[tuple[Item | None, int]]:
    """``get_item``, and the stored size of the item found (0 if none)."""
    item_filter = scope.live_item_filter(_core.check_key(key), settings.now)
    document = yield Command("find_one", (item_filter, _SIZED_ITEM), {"collation": _SIMPLE})
    item = None if document is None else item_from_document(document)
    return item, _answer_size(document)


def get_many_within(
    scope: _core.Scope, settings: Settings, keys: object, max_bytes: int
) -> Operation[tuple[dict[str, Any], list[str], int]]:
    """``get_many`` reading at most about ``max_bytes`` of stored items (always one): the
    values found, in the order asked; the keys asked that were not reached, to ask again
    (empty when every key was answered); and the stored size of what was read.

    The documents are read in key order, so every key asked below the last one read that is
    not among them does not exist, and the keys not reached are those above it."""
    checked = _core.check_keys(keys)
    if not checked:
        return {}, [], 0
    options = {"sort": _BY_KEY, "batch_size": _core.LISTING_BATCH_SIZE, "collation": _SIMPLE}
    query = scope.many_filter(checked, settings.now)
    command = Command("find", (query, _SIZED_KEY_AND_VALUE), options, max_bytes=max_bytes)
    documents, complete = yield command
    size = sum(_answer_size(document) for document in documents)
    unread: list[str] = []
    if not complete:
        last = documents[-1]["key"]
        unread = [key for key in dict.fromkeys(checked) if key > last]
    return _core.values_by_key(documents, checked), unread, size


def list_items_within(
    scope: _core.Scope,
    settings: Settings,
    prefix: object,
    limit: object,
    start_after: object,
    max_bytes: int,
) -> Operation[tuple[list[ItemInfo], bool, int]]:
    """``list_items`` reading at most about ``max_bytes`` of metadata (always one item): the
    page, whether it is all of the ``limit`` asked (if not, the listing goes on after its last
    key), and the metadata size read."""
    command = _items_page(scope, settings, prefix, limit, start_after, _SIZED_ITEM_INFO, max_bytes)
    documents, complete = yield command
    size = sum(_answer_size(document) for document in documents)
    return [item_info_from_document(document) for document in documents], complete, size


_SIZED_FOUND_ITEM = {**_FOUND_ITEM, ANSWER_SIZE: _SIZE_OF_ROOT}


def find_items_within(
    scope: _core.Scope,
    settings: Settings,
    *,
    within: object,
    keys: object = None,
    value_filter: object = None,
    limit: object = None,
    offset: object = 0,
    max_bytes: int,
) -> Operation[tuple[list[FoundItem], bool, int]]:
    """``find_items`` reading at most about ``max_bytes`` of stored items (always one): the
    page, whether it is all of the ``limit`` asked (if not, the search goes on at ``offset``
    plus the page's length), and the stored size read. The same ``find``, with each
    document's size added."""
    command = _found_items_command(
        scope,
        settings,
        within,
        keys,
        value_filter,
        limit,
        offset,
        _SIZED_FOUND_ITEM,
        max_bytes,
        _core.SERVICE_SEARCH_MAX_TIME_MS,
    )
    try:
        documents, complete = yield command
    except ExecutionTimeout:
        # the search, not the database, is the problem: asking again would time out again
        raise ValueError(
            "the search did not finish within its time limit (at most "
            f"{_core.SERVICE_SEARCH_MAX_TIME_MS // 1000} s through the store service): "
            "narrow its namespace prefix or filter, or ask for fewer items"
        ) from None
    size = sum(_answer_size(document) for document in documents)
    return [_found(document) for document in documents], complete, size
