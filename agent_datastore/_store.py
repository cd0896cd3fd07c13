"""The synchronous store: ``connect``, ``DataStore`` and ``AgentDataStoreProxy``.

These classes only do I/O: every rule and every command comes from ``_core``, and every driver
error goes through ``_exceptions.translate_driver_errors``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from bson.codec_options import CodecOptions
from pymongo import MongoClient, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    InvalidName,
    InvalidURI,
    OperationFailure,
)

from . import _core, _embedded
from ._exceptions import DataStoreUnavailable, VersionConflict, translate_driver_errors
from ._items import (
    ITEM_INFO_PROJECTION,
    ITEM_PROJECTION,
    Item,
    ItemInfo,
    item_from_document,
    item_info_from_document,
)

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_DATABASE",
    "EMBEDDED_URI",
    "AgentDataStoreProxy",
    "DataStore",
    "connect",
]

EMBEDDED_URI = "mongomock://"
DEFAULT_DATABASE = "agent_datastore"
DEFAULT_COLLECTION = "items"
URI_ENVIRONMENT_VARIABLE = "AGENT_DATASTORE_URI"

# A sandbox should hear within seconds that the database is away, not after pymongo's 30 s.
# Options in the URI or passed to connect() replace these.
CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5_000,
    "connectTimeoutMS": 5_000,
    "socketTimeoutMS": 30_000,
    "appname": "agent-datastore",
}

# Whatever codec options the caller's collection has, the store reads plain dicts and
# timezone-aware UTC dates.
_CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict, tz_aware=True, tzinfo=timezone.utc
)
_VALUE_ONLY = {"value": 1, "_id": 0}
_KEY_ONLY = {"key": 1, "_id": 0}
_KEY_AND_VALUE = {"key": 1, "value": 1, "_id": 0}
_VERSION_ONLY = {"version": 1, "createdAt": 1, "expiresAt": 1, "_id": 0}
_COUNTER_STATE = {"value": 1, "createdAt": 1, "expiresAt": 1, "_id": 0}
_BY_KEY = [("key", 1)]
_DUPLICATE_KEY = 11000
# The same index exists under another name (85), or with other options (86).
_INDEX_CONFLICTS = frozenset({85, 86})
_SIMPLE = _core.SIMPLE_COLLATION


class DataStore:
    """A collection of agent data, and the factory of its proxies.

    ``DataStore(collection)`` wraps a pymongo ``Collection`` (or a mongomock-ng one) that the
    caller owns: ``close()`` then leaves the caller's client open. ``connect()`` makes a store
    that owns its client and closes it. Creating a store never touches the database; the
    indexes are ensured once, on first use.

    ``max_value_bytes`` caps the BSON size of each value this store writes (default: whatever
    fits MongoDB's 16 MiB document). ``clock`` is the time source of timestamps and expiry, a
    function returning an aware ``datetime``; tests pass one they can move forward.
    """

    def __init__(
        self,
        collection: Collection[Any],
        *,
        ensure_indexes: bool = True,
        max_value_bytes: int | None = None,
        clock: _core.Clock | None = None,
    ) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a function, not {type(clock).__name__}")
        self._max_value_bytes = _core.check_max_value_bytes(max_value_bytes)
        self._clock = clock
        self._collection = collection
        target: Any = collection.with_options(codec_options=_CODEC_OPTIONS)
        if _embedded.is_fake_collection(collection):
            target = _embedded.LockedCollection(target)
        self._target = target
        self._indexes_ready = not ensure_indexes
        self._index_lock = threading.Lock()
        self._owned_client: Any = None
        self._closed = False

    @property
    def collection(self) -> Collection[Any]:
        """The collection this store reads and writes, as it was given or created."""
        return self._collection

    @property
    def max_value_bytes(self) -> int:
        """The largest value, in BSON bytes, that this store writes."""
        return self._max_value_bytes

    def now(self) -> datetime:
        """The store's current time, as it timestamps items: UTC, whole milliseconds."""
        return _core.utc_now(self._clock)

    def proxy(
        self, user_id: str, agent_name: str, namespace: str = "default"
    ) -> AgentDataStoreProxy:
        """The data store of one user's agent, in ``namespace``."""
        return AgentDataStoreProxy(self, user_id, agent_name, namespace)

    def ensure_indexes(self) -> None:
        """Create the unique index on (userId, agentName, namespace, key) and the TTL index on
        expiresAt if they are missing.

        Idempotent. Proxies call it once, on first use; call it yourself to fail early.
        """
        if self._closed:
            raise DataStoreUnavailable("the data store is closed")
        with translate_driver_errors():
            try:
                self._target.create_index(
                    _core.INDEX_KEYS, name=_core.INDEX_NAME, unique=True, collation=_SIMPLE
                )
            except OperationFailure as exc:
                if exc.code not in _INDEX_CONFLICTS or not self._has_index(
                    _core.is_equivalent_index
                ):
                    raise
            try:
                self._target.create_index(
                    _core.TTL_INDEX_KEYS,
                    name=_core.TTL_INDEX_NAME,
                    expireAfterSeconds=0,
                    sparse=True,
                )
            except OperationFailure as exc:
                if exc.code not in _INDEX_CONFLICTS or not self._has_index(_core.is_expiry_index):
                    raise
        self._indexes_ready = True

    def _has_index(self, matches: Any) -> bool:
        return any(matches(spec) for spec in self._target.index_information().values())

    def _ready_collection(self) -> Any:
        """The collection to send commands to, its index ensured."""
        if self._closed:
            raise DataStoreUnavailable("the data store is closed")
        if not self._indexes_ready:
            with self._index_lock:
                if not self._indexes_ready:
                    self.ensure_indexes()
        return self._target

    def close(self) -> None:
        """Close the client if this store owns it (it came from ``connect``). Idempotent."""
        self._closed = True
        if self._owned_client is not None:
            self._owned_client.close()
            self._owned_client = None

    def __enter__(self) -> DataStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        name = f"{self._collection.database.name}.{self._collection.name}"
        return f"<DataStore {name}{' closed' if self._closed else ''}>"


class AgentDataStoreProxy:
    """The ``data_store`` of one user's agent in one namespace.

    Every method is one command to the database (none for an empty batch). A proxy never reads,
    lists, changes or deletes anything outside its user, agent and namespace. Proxies are
    immutable and safe to share across threads.
    """

    __slots__ = ("_scope", "_store")

    def __init__(
        self, store: DataStore, user_id: str, agent_name: str, namespace: str = "default"
    ) -> None:
        if not isinstance(store, DataStore):
            raise TypeError(f"store must be a DataStore, not {type(store).__name__}")
        self._store = store
        self._scope = _core.Scope.of(user_id, agent_name, namespace)

    @property
    def user_id(self) -> str:
        return self._scope.user_id

    @property
    def agent_name(self) -> str:
        return self._scope.agent_name

    @property
    def namespace(self) -> str:
        return self._scope.namespace

    def __repr__(self) -> str:
        scope = self._scope
        return (
            f"AgentDataStoreProxy(user_id={scope.user_id!r}, agent_name={scope.agent_name!r}, "
            f"namespace={scope.namespace!r})"
        )

    def _now(self) -> datetime:
        return self._store.now()

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when there is none (or it expired).

        A stored ``null`` is a value: ``get`` returns ``None`` for it, whatever the default.
        """
        item_filter = self._scope.live_item_filter(_core.check_key(key), self._now())
        with translate_driver_errors():
            document = self._store._ready_collection().find_one(
                item_filter, _VALUE_ONLY, collation=_SIMPLE
            )
        return _core.value_of(document, default)

    def get_item(self, key: str) -> Item | None:
        """The item under ``key`` with its metadata, timestamps, version and expiry; ``None``
        when there is none (or it expired)."""
        item_filter = self._scope.live_item_filter(_core.check_key(key), self._now())
        with translate_driver_errors():
            document = self._store._ready_collection().find_one(
                item_filter, ITEM_PROJECTION, collation=_SIMPLE
            )
        return None if document is None else item_from_document(document)

    def set(
        self,
        key: str,
        value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
        if_version: int | None = None,
    ) -> None:
        """Store ``value`` under ``key``, overwriting any value; merge ``metadata`` into the
        item's metadata. ``TypeError`` for a value that is not JSON.

        ``ttl`` (seconds or a ``timedelta``) makes the item expire; without it the item does
        not expire. ``if_version=N`` writes only if the item is at version N (0: only if it is
        absent), else raises ``VersionConflict``; after it, the item is at version N + 1.
        """
        key = _core.check_key(key)
        checked_metadata = _core.check_metadata(metadata)
        checked_ttl = _core.check_ttl(ttl)
        expected = _core.check_if_version(if_version)
        now = self._now()
        write = self._scope.set_write(
            key,
            value,
            checked_metadata,
            now,
            ttl=checked_ttl,
            if_version=expected,
            max_value_bytes=self._store.max_value_bytes,
        )
        if expected is None:
            with translate_driver_errors((key,)):
                self._update(write)
            return
        with translate_driver_errors((key,)):
            before = self._find_and_update(write, _VERSION_ONLY)
        current = _core.set_conflict(before, now, expected)
        if current is not None:
            raise VersionConflict(key, expected, current)

    def _update(self, write: _core.Write) -> None:
        collection = self._store._ready_collection()
        try:
            collection.update_one(
                write.filter, write.pipeline, upsert=write.upsert, collation=_SIMPLE
            )
        except DuplicateKeyError:
            # Another client inserted the key between our match and our insert (servers
            # before 4.2 do not retry this themselves); the item exists now, so the same
            # command updates it.
            collection.update_one(
                write.filter, write.pipeline, upsert=write.upsert, collation=_SIMPLE
            )

    def _find_and_update(self, write: _core.Write, projection: Mapping[str, Any]) -> Any:
        """Run ``write`` and return the document as it was before (``None`` if absent)."""
        collection = self._store._ready_collection()
        arguments: dict[str, Any] = {
            "projection": projection,
            "upsert": write.upsert,
            "return_document": ReturnDocument.BEFORE,
            "collation": _SIMPLE,
        }
        try:
            return collection.find_one_and_update(write.filter, write.pipeline, **arguments)
        except DuplicateKeyError:  # as in _update
            return collection.find_one_and_update(write.filter, write.pipeline, **arguments)

    def increment(self, key: str, amount: int = 1, *, ttl: float | timedelta | None = None) -> int:
        """Add ``amount`` to the integer stored under ``key`` and return the new value, in one
        atomic command; an absent (or expired) key starts from 0, and expires after ``ttl``
        if one is given (a live counter keeps its expiry). ``TypeError`` if the value is not
        an integer, ``ValueError`` if the sum would leave the 64-bit range."""
        key = _core.check_key(key)
        amount = _core.check_amount(amount)
        checked_ttl = _core.check_ttl(ttl)
        now = self._now()
        write = self._scope.increment_write(key, amount, now, checked_ttl)
        with translate_driver_errors((key,)):
            before = self._find_and_update(write, _COUNTER_STATE)
        return _core.increment_result(key, before, now, amount)

    def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Delete ``key``; ``True`` if it existed (and had not expired).

        ``if_version=N`` deletes only if the item is at version N, else raises
        ``VersionConflict`` (after one more read, for the current version);
        ``if_version=0`` asserts that the item is absent.
        """
        key = _core.check_key(key)
        expected = _core.check_if_version(if_version)
        now = self._now()
        item_filter = self._scope.live_item_filter(key, now)
        if expected == 0:
            with translate_driver_errors():
                document = self._store._ready_collection().find_one(
                    item_filter, _VERSION_ONLY, collation=_SIMPLE
                )
            if document is not None:
                raise VersionConflict(key, 0, _core.version_of(document))
            return False
        with translate_driver_errors():
            collection = self._store._ready_collection()
            if expected is None:
                # Live or expired, the document goes: an expired one would otherwise wait for
                # the TTL monitor. Only a live one counts as deleted.
                document = collection.find_one_and_delete(
                    self._scope.item_filter(key), projection=_VERSION_ONLY, collation=_SIMPLE
                )
                return _core.is_live(document, now)
            item_filter = {**item_filter, **_core.version_query(expected)}
            if collection.delete_one(item_filter, collation=_SIMPLE).deleted_count:
                return True
            # The conditional delete alone decided; this read only tells the caller why.
            document = collection.find_one(
                self._scope.live_item_filter(key, now), _VERSION_ONLY, collation=_SIMPLE
            )
        raise VersionConflict(key, expected, 0 if document is None else _core.version_of(document))

    def list_keys(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[str]:
        """The keys of this namespace that start with ``prefix`` (all keys without one),
        sorted. Paged: at most ``limit`` keys, those after the key ``start_after``."""
        keys_filter = self._keys_filter(prefix, start_after)
        return self._key_page(keys_filter, _core.check_limit(limit))

    def _keys_filter(self, prefix: object, start_after: object) -> dict[str, Any]:
        checked_prefix = _core.check_prefix(prefix)
        checked_start = _core.check_start_after(start_after)
        return self._scope.keys_filter(checked_prefix, self._now(), checked_start)

    def _key_page(self, keys_filter: dict[str, Any], limit: int) -> list[str]:
        with translate_driver_errors():
            cursor = self._store._ready_collection().find(
                keys_filter,
                _KEY_ONLY,
                sort=_BY_KEY,
                limit=limit,
                batch_size=_core.LISTING_BATCH_SIZE,
                collation=_SIMPLE,
            )
            return [document["key"] for document in cursor]

    def iter_keys(self, prefix: str | None = None) -> Iterator[str]:
        """Every key of this namespace that starts with ``prefix``, sorted, streamed a page at
        a time: memory stays flat however many keys there are.

        Each page is a new query starting after the last key seen, so the stream never
        repeats a key and never holds a cursor open on the server; keys written or deleted
        meanwhile are seen or not depending on where the stream is.
        """
        checked_prefix = _core.check_prefix(prefix)
        return self._iter_keys(checked_prefix)

    def _iter_keys(self, prefix: str | None) -> Iterator[str]:
        start_after: str | None = None
        while True:
            keys_filter = self._scope.keys_filter(prefix, self._now(), start_after)
            page = self._key_page(keys_filter, _core.KEY_PAGE_SIZE)
            yield from page
            if len(page) < _core.KEY_PAGE_SIZE:
                return
            start_after = page[-1]

    def list_items(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[ItemInfo]:
        """The details of the items ``list_keys`` would list (metadata, timestamps, version,
        expiry and stored size, without the values), paged the same way."""
        keys_filter = self._keys_filter(prefix, start_after)
        checked_limit = _core.check_limit(limit)
        with translate_driver_errors():
            cursor = self._store._ready_collection().find(
                keys_filter,
                ITEM_INFO_PROJECTION,
                sort=_BY_KEY,
                limit=checked_limit,
                batch_size=_core.LISTING_BATCH_SIZE,
                collation=_SIMPLE,
            )
            documents = list(cursor)
        return [item_info_from_document(document) for document in documents]

    def list_namespaces(self) -> list[str]:
        """The namespaces in which this user's agent has at least one key, sorted."""
        with translate_driver_errors():
            names = self._store._ready_collection().distinct(
                "namespace", self._scope.agent_filter(self._now()), collation=_SIMPLE
            )
        return sorted(name for name in names if isinstance(name, str))

    def use_namespace(self, namespace: str) -> AgentDataStoreProxy:
        """A new proxy for the same user and agent in ``namespace``; this one is unchanged."""
        return AgentDataStoreProxy(
            self._store, self._scope.user_id, self._scope.agent_name, namespace
        )

    def clear(self) -> int:
        """Delete every key of this namespace; the number deleted (expired items, which are
        already gone for every reader, are not counted)."""
        with translate_driver_errors():
            result = self._store._ready_collection().delete_many(
                self._scope.live_namespace_filter(self._now()), collation=_SIMPLE
            )
        return int(result.deleted_count)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those ``keys`` that exist, in the order asked, in one query."""
        checked = _core.check_keys(keys)
        if not checked:
            return {}
        with translate_driver_errors():
            cursor = self._store._ready_collection().find(
                self._scope.many_filter(checked, self._now()),
                _KEY_AND_VALUE,
                batch_size=_core.LISTING_BATCH_SIZE,
                collation=_SIMPLE,
            )
            documents = list(cursor)
        return _core.values_by_key(documents, checked)

    def set_many(
        self,
        items: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        """Store every key and value of ``items`` in one unordered bulk write, each with
        ``metadata`` merged in (and ``ttl``, as for ``set``); the number of items stored.
        Every item is checked first: if one is invalid, nothing is written."""
        items = _core.check_items(items)
        checked_metadata = _core.check_metadata(metadata)
        checked_ttl = _core.check_ttl(ttl)
        now = self._now()
        limit = self._store.max_value_bytes
        keys: list[str] = []
        requests: list[UpdateOne] = []
        for raw_key, value in items.items():
            key = _core.check_key(raw_key)
            write = self._scope.set_write(
                key, value, checked_metadata, now, ttl=checked_ttl, max_value_bytes=limit
            )
            keys.append(key)
            requests.append(UpdateOne(write.filter, write.pipeline, upsert=True, collation=_SIMPLE))
        if not requests:
            return 0
        with translate_driver_errors(keys):
            collection = self._store._ready_collection()
            try:
                collection.bulk_write(requests, ordered=False)
            except BulkWriteError as exc:
                collection.bulk_write(_racing_upserts(exc, requests), ordered=False)
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


def connect(
    uri: str | None = None,
    *,
    database: str | None = None,
    collection: str = DEFAULT_COLLECTION,
    ensure_indexes: bool = True,
    max_value_bytes: int | None = None,
    clock: _core.Clock | None = None,
    **options: Any,
) -> DataStore:
    """Open a store that owns its client.

    ``uri`` defaults to ``$AGENT_DATASTORE_URI``, else ``mongomock://``, the embedded in-memory
    store (new, empty and private at each call). For ``mongodb://`` and ``mongodb+srv://`` URIs,
    the database is the URI's path (``agent_datastore`` without one) and ``options`` go to
    ``pymongo.MongoClient``; options in ``options`` win over the URI's, which win over this
    package's defaults. ``ensure_indexes``, ``max_value_bytes`` and ``clock`` are passed to
    ``DataStore``. Never blocks and never fails for an unreachable server.
    """
    # checked before a client exists, so a bad argument leaks nothing
    _core.check_max_value_bytes(max_value_bytes)
    if uri is None:
        uri = os.environ.get(URI_ENVIRONMENT_VARIABLE) or EMBEDDED_URI
    if not isinstance(uri, str):
        raise TypeError(f"uri must be a str, not {type(uri).__name__}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "mongomock":
        client: Any = _embedded.new_client(**options)
    elif scheme in ("mongodb", "mongodb+srv"):
        named = {name.lower() for name in _uri_option_names(parts.query)}
        named.update(name.lower() for name in options)
        defaults = {k: v for k, v in CLIENT_DEFAULTS.items() if k.lower() not in named}
        if scheme == "mongodb+srv" and "connect" not in named:
            # pymongo resolves SRV records in the constructor when connect=True, which blocks
            # and raises without DNS; deferred, the lookup happens on first use.
            defaults["connect"] = False
        try:
            client = MongoClient(uri, **defaults, **options)
        except (InvalidURI, ConfigurationError) as exc:  # the caller's URI or options
            raise ValueError(f"invalid MongoDB URI or option: {exc}") from exc
    else:
        raise ValueError(
            f"unsupported URI scheme {parts.scheme!r}: use mongodb://, mongodb+srv:// "
            "or mongomock://"
        )
    database = database or unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE
    try:
        target = client[database][collection]
    except (InvalidName, TypeError) as exc:
        client.close()
        raise ValueError(f"invalid database or collection name: {exc}") from exc
    try:
        store = DataStore(
            target, ensure_indexes=ensure_indexes, max_value_bytes=max_value_bytes, clock=clock
        )
    except TypeError:
        client.close()
        raise
    store._owned_client = client
    return store


def _uri_option_names(query: str) -> list[str]:
    pairs = query.replace(";", "&").split("&")
    return [pair.split("=", 1)[0] for pair in pairs if pair]
