"""The synchronous store: ``connect``, ``DataStore`` and ``AgentDataStoreProxy``.

These classes only do I/O: every rule and every command comes from ``_core``, and every driver
error goes through ``_exceptions.translate_driver_errors``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from datetime import timezone
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from bson.codec_options import CodecOptions
from pymongo import MongoClient, UpdateOne
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
from ._exceptions import DataStoreUnavailable, translate_driver_errors

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
_BY_KEY = [("key", 1)]
_DUPLICATE_KEY = 11000
_INDEX_OPTIONS_CONFLICT = 85  # the same index exists under another name
_SIMPLE = _core.SIMPLE_COLLATION


class DataStore:
    """A collection of agent data, and the factory of its proxies.

    ``DataStore(collection)`` wraps a pymongo ``Collection`` (or a mongomock-ng one) that the
    caller owns: ``close()`` then leaves the caller's client open. ``connect()`` makes a store
    that owns its client and closes it. Creating a store never touches the database; the
    unique index is ensured once, on first use.
    """

    def __init__(self, collection: Collection[Any], *, ensure_indexes: bool = True) -> None:
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

    def proxy(
        self, user_id: str, agent_name: str, namespace: str = "default"
    ) -> AgentDataStoreProxy:
        """The data store of one user's agent, in ``namespace``."""
        return AgentDataStoreProxy(self, user_id, agent_name, namespace)

    def ensure_indexes(self) -> None:
        """Create the unique index on (userId, agentName, namespace, key) if it is missing.

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
                if exc.code != _INDEX_OPTIONS_CONFLICT or not self._has_equivalent_index():
                    raise
        self._indexes_ready = True

    def _has_equivalent_index(self) -> bool:
        indexes = self._target.index_information().values()
        return any(_core.is_equivalent_index(spec) for spec in indexes)

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

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when there is none.

        A stored ``null`` is a value: ``get`` returns ``None`` for it, whatever the default.
        """
        item_filter = self._scope.item_filter(_core.check_key(key))
        with translate_driver_errors():
            document = self._store._ready_collection().find_one(
                item_filter, _VALUE_ONLY, collation=_SIMPLE
            )
        return _core.value_of(document, default)

    def set(self, key: str, value: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """Store ``value`` under ``key``, overwriting any value; merge ``metadata`` into the
        item's metadata. ``TypeError`` for a value that is not JSON."""
        key = _core.check_key(key)
        upsert = self._scope.upsert(key, value, _core.check_metadata(metadata), _core.utc_now())
        with translate_driver_errors((key,)):
            collection = self._store._ready_collection()
            try:
                collection.update_one(upsert.filter, upsert.update, upsert=True, collation=_SIMPLE)
            except DuplicateKeyError:
                # Another client inserted the key between our match and our insert; the item
                # exists now, so the same idempotent upsert updates it.
                collection.update_one(upsert.filter, upsert.update, upsert=True, collation=_SIMPLE)

    def delete(self, key: str) -> bool:
        """Delete ``key``; ``True`` if it existed."""
        item_filter = self._scope.item_filter(_core.check_key(key))
        with translate_driver_errors():
            result = self._store._ready_collection().delete_one(item_filter, collation=_SIMPLE)
        return bool(result.deleted_count == 1)

    def list_keys(self, prefix: str | None = None) -> list[str]:
        """The keys of this namespace that start with ``prefix`` (all keys without one),
        sorted."""
        return self._list_keys(prefix, 0)

    def _list_keys(self, prefix: str | None, limit: int) -> list[str]:
        """``list_keys``, at most ``limit`` keys (0: all); the admin tools page with it."""
        keys_filter = self._scope.keys_filter(_core.check_prefix(prefix))
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

    def list_namespaces(self) -> list[str]:
        """The namespaces in which this user's agent has at least one key, sorted."""
        with translate_driver_errors():
            names = self._store._ready_collection().distinct(
                "namespace", self._scope.agent_filter(), collation=_SIMPLE
            )
        return sorted(name for name in names if isinstance(name, str))

    def use_namespace(self, namespace: str) -> AgentDataStoreProxy:
        """A new proxy for the same user and agent in ``namespace``; this one is unchanged."""
        return AgentDataStoreProxy(
            self._store, self._scope.user_id, self._scope.agent_name, namespace
        )

    def clear(self) -> int:
        """Delete every key of this namespace; the number deleted."""
        with translate_driver_errors():
            result = self._store._ready_collection().delete_many(
                self._scope.namespace_filter, collation=_SIMPLE
            )
        return int(result.deleted_count)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those ``keys`` that exist, in the order asked, in one query."""
        checked = _core.check_keys(keys)
        if not checked:
            return {}
        with translate_driver_errors():
            cursor = self._store._ready_collection().find(
                self._scope.many_filter(checked),
                _KEY_AND_VALUE,
                batch_size=_core.LISTING_BATCH_SIZE,
                collation=_SIMPLE,
            )
            documents = list(cursor)
        return _core.values_by_key(documents, checked)

    def set_many(self, items: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> int:
        """Store every key and value of ``items`` in one unordered bulk write, each with
        ``metadata`` merged in; the number of items stored. Every item is checked first: if
        one is invalid, nothing is written."""
        items = _core.check_items(items)
        checked_metadata = _core.check_metadata(metadata)
        now = _core.utc_now()
        keys: list[str] = []
        requests: list[UpdateOne] = []
        for raw_key, value in items.items():
            key = _core.check_key(raw_key)
            upsert = self._scope.upsert(key, value, checked_metadata, now)
            keys.append(key)
            requests.append(UpdateOne(upsert.filter, upsert.update, upsert=True, collation=_SIMPLE))
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
    **options: Any,
) -> DataStore:
    """Open a store that owns its client.

    ``uri`` defaults to ``$AGENT_DATASTORE_URI``, else ``mongomock://``, the embedded in-memory
    store (new, empty and private at each call). For ``mongodb://`` and ``mongodb+srv://`` URIs,
    the database is the URI's path (``agent_datastore`` without one) and ``options`` go to
    ``pymongo.MongoClient``; options in ``options`` win over the URI's, which win over this
    package's defaults. Never blocks and never fails for an unreachable server.
    """
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
    store = DataStore(target, ensure_indexes=ensure_indexes)
    store._owned_client = client
    return store


def _uri_option_names(query: str) -> list[str]:
    pairs = query.replace(";", "&").split("&")
    return [pair.split("=", 1)[0] for pair in pairs if pair]
