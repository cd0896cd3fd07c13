"""The synchronous store: ``connect``, ``DataStore`` and ``AgentDataStoreProxy``.

These classes only do I/O: every operation (its validation, its commands, the reading of the
replies) is written once in ``_operations``, which ``AgentDataStoreProxy`` runs with pymongo's
``MongoClient`` and ``AsyncAgentDataStoreProxy`` (in ``_async``) with ``AsyncMongoClient``.
What the two stores and the two proxies share that is not I/O (settings, names, the parsing
of a URI) is in the base classes here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import pymongo
from bson.codec_options import CodecOptions
from pymongo import MongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.errors import ConfigurationError, InvalidName, InvalidURI

from . import _core, _embedded
from . import _operations as ops
from ._exceptions import DataStoreUnavailable
from ._items import Item, ItemInfo

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_DATABASE",
    "EMBEDDED_URI",
    "AgentDataStoreProxy",
    "DataStore",
    "connect",
]

T = TypeVar("T")

EMBEDDED_URI = "mongomock://"
DEFAULT_DATABASE = "agent_datastore"
DEFAULT_COLLECTION = "items"
URI_ENVIRONMENT_VARIABLE = "AGENT_DATASTORE_URI"

logger = logging.getLogger("agent_datastore")

# A sandbox should hear within seconds that the database is away, not after pymongo's 30 s.
# Options in the URI or passed to connect() replace these.
CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5_000,
    "connectTimeoutMS": 5_000,
    "socketTimeoutMS": 30_000,
    "appname": "agent-datastore",
}

# Whatever codec options the caller's collection has, the store reads plain dicts and naive
# dates, which BSON holds in UTC. Every date the store hands out is made aware UTC where it is
# read (``_core.as_utc``): pymongo decodes a date four to five times slower when it must make
# it aware itself (tz_aware with a tzinfo converts each one through astimezone).
CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(document_class=dict, tz_aware=False)


class StoreBase:
    """What a store is besides its I/O: its collection, value limit, clock and state."""

    def __init__(
        self,
        collection: Any,
        *,
        ensure_indexes: bool,
        max_value_bytes: int | None,
        clock: _core.Clock | None,
    ) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a function, not {type(clock).__name__}")
        self._max_value_bytes = _core.check_max_value_bytes(max_value_bytes)
        check_acknowledged(getattr(collection, "write_concern", None))
        self._clock = clock
        self._collection = collection
        self._indexes_ready = not ensure_indexes
        # when a first-use build was cut off: the time.monotonic() at which to try again
        self._index_retry_at: float | None = None
        self._owned_client: Any = None
        self._closed = False

    @property
    def max_value_bytes(self) -> int:
        """The largest value, in BSON bytes, that this store writes."""
        return self._max_value_bytes

    def now(self) -> datetime:
        """The store's current time, as it timestamps items: UTC, whole milliseconds."""
        return _core.utc_now(self._clock)

    def _locked_target(self) -> Any:
        """The collection with the store's codec options; the embedded fake behind its lock."""
        target = self._collection.with_options(codec_options=CODEC_OPTIONS)
        if _embedded.is_fake_collection(self._collection):
            target = _embedded.LockedCollection(target)
        return target

    def _settings(self) -> ops.Settings:
        return ops.Settings(self.now(), self._max_value_bytes)

    def _settle_indexes(self, in_place: bool) -> None:
        """Record what a first-use attempt found: the indexes in place, or a build cut off at
        its bound, to be tried again after ``INDEX_RETRY_INTERVAL``."""
        if in_place:
            self._indexes_ready = True
            self._index_retry_at = None
        else:
            self._index_retry_at = time.monotonic() + _core.INDEX_RETRY_INTERVAL
            # calls now run without uniqueness and scan: an operator has to hear of it
            logger.warning(
                "%s: building the store's indexes took longer than %d ms and the server "
                "aborted the build; calls go on without them (queries scan, uniqueness is not "
                "enforced) and the store tries again in %d s. Run `agent-datastore "
                "ensure-indexes` to build them (docs/operations.md, First use and index builds)",
                self,
                _core.FIRST_USE_INDEX_BUILD_MS,
                _core.INDEX_RETRY_INTERVAL,
            )

    def _index_retry_due(self) -> bool:
        """Whether a build cut off earlier is due to be tried again (``False`` when none was
        cut off)."""
        retry_at = self._index_retry_at
        return retry_at is not None and time.monotonic() >= retry_at

    def _check_open(self) -> None:
        if self._closed:
            raise DataStoreUnavailable("the data store is closed")

    def __repr__(self) -> str:
        name = f"{self._collection.database.name}.{self._collection.name}"
        return f"<{type(self).__name__} {name}{' closed' if self._closed else ''}>"


class DataStore(StoreBase):
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
        if isinstance(collection, AsyncCollection):
            raise TypeError(
                "DataStore needs a pymongo Collection; use AsyncDataStore for an AsyncCollection"
            )
        super().__init__(
            collection,
            ensure_indexes=ensure_indexes,
            max_value_bytes=max_value_bytes,
            clock=clock,
        )
        self._target = self._locked_target()
        self._index_lock = threading.Lock()
        self._index_attempts = 0
        self._index_failure: BaseException | None = None

    @property
    def collection(self) -> Collection[Any]:
        """The collection this store reads and writes, as it was given or created."""
        return self._collection  # type: ignore[no-any-return]

    def proxy(
        self, user_id: str, agent_name: str, namespace: str = "default"
    ) -> AgentDataStoreProxy:
        """The data store of one user's agent, in ``namespace``."""
        return AgentDataStoreProxy(self, user_id, agent_name, namespace)

    def ensure_indexes(self, *, timeout: float = _core.ENSURE_INDEXES_TIMEOUT) -> None:
        """Create the unique index on (userId, agentName, namespace, key) and the TTL index on
        expiresAt if they are missing, and wait for the build: at most ``timeout`` seconds
        (default a day), after which the server aborts it and this raises
        ``DataStoreUnavailable``.

        Idempotent: when both are there, one ``listIndexes`` and nothing else. Proxies do the
        same on first use but wait only ``FIRST_USE_INDEX_BUILD_MS``; call this to fail early,
        or run ``agent-datastore ensure-indexes``, before deploying on a large collection.
        """
        self._check_open()
        # pymongo's timeout() lends this one operation its own socket timeout and maxTimeMS:
        # an index build may take far longer than any other command
        with pymongo.timeout(check_timeout(timeout)):
            ops.run_sync(ops.ensure_indexes(), lambda: self._target)
        self._settle_indexes(True)

    def _prepare_indexes(self) -> None:
        self._settle_indexes(ops.run_sync(ops.prepare_indexes(), lambda: self._target))

    def _ready_collection(self) -> Any:
        """The collection to send commands to, its indexes checked on first use.

        The first call sends ``listIndexes``, and ``createIndexes`` bounded by
        ``FIRST_USE_INDEX_BUILD_MS`` if an index is missing. Threads that arrive while that
        attempt is under way wait for it and share its outcome: when the server is away, they
        all fail together after one timeout, not one timeout after another. The next call
        after a failure tries again. When the build was cut off at its bound, calls go on
        without the indexes; after ``INDEX_RETRY_INTERVAL`` one call tries again while the
        others go on without waiting for it.
        """
        if self._indexes_ready and not self._closed:
            return self._target  # every call but the first: the short way
        self._check_open()
        if self._indexes_ready:
            return self._target
        if self._index_retry_at is None:
            self._first_use()
        elif self._index_retry_due() and self._index_lock.acquire(blocking=False):
            try:
                if self._index_retry_due():
                    self._prepare_indexes()
            finally:
                self._index_lock.release()
        return self._target

    def _first_use(self) -> None:
        finished_before = self._index_attempts
        with self._index_lock:
            if self._indexes_ready or self._index_retry_at is not None:
                return  # the attempt this thread waited for settled it
            failure = self._index_failure
            if failure is not None and self._index_attempts != finished_before:
                raise failure  # the attempt this thread waited for failed
            try:
                self._prepare_indexes()
            except BaseException as exc:
                self._index_failure = exc
                raise
            finally:
                self._index_attempts += 1  # attempts finished, failed or not
            self._index_failure = None

    def _run(self, operation: ops.Operation[T]) -> T:
        return ops.run_sync(operation, self._ready_collection)

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


class ProxyBase(_core.Scoped):
    """What both proxies are besides their I/O: a store and a validated scope."""

    __slots__ = ("_scope", "_store")
    _store_class: ClassVar[type[StoreBase]] = StoreBase

    def __init__(self, store: Any, user_id: str, agent_name: str, namespace: str = "default"):
        if not isinstance(store, self._store_class):
            expected = self._store_class.__name__
            article = "an" if expected[0] in "AEIOU" else "a"
            raise TypeError(f"store must be {article} {expected}, not {type(store).__name__}")
        self._store = store
        self._scope = _core.Scope.of(user_id, agent_name, namespace)

    def __repr__(self) -> str:
        scope = self._scope
        return (
            f"{type(self).__name__}(user_id={scope.user_id!r}, "
            f"agent_name={scope.agent_name!r}, namespace={scope.namespace!r})"
        )


class AgentDataStoreProxy(ProxyBase):
    """The ``data_store`` of one user's agent in one namespace.

    Every method is one command to the database (none for an empty batch). A proxy never reads,
    lists, changes or deletes anything outside its user, agent and namespace. Proxies are
    immutable and safe to share across threads.
    """

    __slots__ = ()
    _store_class = DataStore
    _store: DataStore

    def __init__(
        self, store: DataStore, user_id: str, agent_name: str, namespace: str = "default"
    ) -> None:
        super().__init__(store, user_id, agent_name, namespace)

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when there is none (or it expired).

        A stored ``null`` is a value: ``get`` returns ``None`` for it, whatever the default.
        """
        return self._store._run(ops.get(self._scope, self._store._settings(), key, default))

    def get_item(self, key: str) -> Item | None:
        """The item under ``key`` with its metadata, timestamps, version and expiry; ``None``
        when there is none (or it expired)."""
        return self._store._run(ops.get_item(self._scope, self._store._settings(), key))

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
        settings = self._store._settings()
        self._store._run(ops.put(self._scope, settings, key, value, metadata, ttl, if_version))

    def increment(self, key: str, amount: int = 1, *, ttl: float | timedelta | None = None) -> int:
        """Add ``amount`` to the integer stored under ``key`` and return the new value, in one
        atomic command; an absent (or expired) key starts from 0, and expires after ``ttl``
        if one is given (a live counter keeps its expiry). ``TypeError`` if the value is not
        an integer, ``ValueError`` if the sum would leave the 64-bit range."""
        settings = self._store._settings()
        return self._store._run(ops.increment(self._scope, settings, key, amount, ttl))

    def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Delete ``key``; ``True`` if it existed (and had not expired).

        ``if_version=N`` deletes only if the item is at version N, else raises
        ``VersionConflict`` (after one more read, for the current version);
        ``if_version=0`` asserts that the item is absent.
        """
        settings = self._store._settings()
        return self._store._run(ops.delete(self._scope, settings, key, if_version))

    def list_keys(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[str]:
        """The keys of this namespace that start with ``prefix`` (all keys without one),
        sorted. Paged: at most ``limit`` keys, those after the key ``start_after``."""
        settings = self._store._settings()
        return self._store._run(ops.list_keys(self._scope, settings, prefix, limit, start_after))

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
            # the page starts after a key as stored (not re-checked as an argument would be)
            page_filter = self._scope.keys_filter(prefix, self._store.now(), start_after)
            page = self._store._run(ops.key_page(page_filter, _core.KEY_PAGE_SIZE))
            yield from page
            start_after = ops.next_page_start(page)
            if start_after is None:
                return

    def list_items(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[ItemInfo]:
        """The details of the items ``list_keys`` would list (metadata, timestamps, version,
        expiry and stored size, without the values), paged the same way."""
        settings = self._store._settings()
        return self._store._run(ops.list_items(self._scope, settings, prefix, limit, start_after))

    def list_namespaces(self) -> list[str]:
        """The namespaces in which this user's agent has at least one key, sorted."""
        return self._store._run(ops.list_namespaces(self._scope, self._store._settings()))

    def use_namespace(self, namespace: str) -> AgentDataStoreProxy:
        """A new proxy for the same user and agent in ``namespace``; this one is unchanged."""
        return AgentDataStoreProxy(
            self._store, self._scope.user_id, self._scope.agent_name, namespace
        )

    def clear(self) -> int:
        """Delete every key of this namespace; the number deleted (expired items, which are
        already gone for every reader, are left to the server's TTL monitor)."""
        return self._store._run(ops.clear(self._scope, self._store._settings()))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those ``keys`` that exist, in the order asked, in one query."""
        return self._store._run(ops.get_many(self._scope, self._store._settings(), keys))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete those ``keys`` that exist, in one command; the number deleted. The keys are
        checked as ``get_many`` checks them (a repeated key counts once); items that have
        expired count as absent, as for ``delete``, and are left to the server's TTL monitor."""
        return self._store._run(ops.delete_many(self._scope, self._store._settings(), keys))

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
        settings = self._store._settings()
        return self._store._run(ops.set_many(self._scope, settings, items, metadata, ttl))


def open_client(
    uri: str | None,
    database: str | None,
    collection: str,
    max_value_bytes: int | None,
    options: dict[str, Any],
    *,
    asynchronous: bool,
) -> tuple[Any, Any]:
    """The client (owned by the store about to be made) and the collection that ``connect``
    or ``connect_async`` asks for. Never blocks and never fails for an unreachable server."""
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
        if scheme == "mongodb+srv" and "connect" not in named and not asynchronous:
            # pymongo resolves SRV records in the constructor when connect=True, which blocks
            # and raises without DNS; deferred, the lookup happens on first use. The async
            # client always connects on first use.
            defaults["connect"] = False
        client_class: Any = MongoClient
        if asynchronous:
            from pymongo import AsyncMongoClient

            client_class = AsyncMongoClient
        try:
            client = client_class(uri, **defaults, **options)
        except (InvalidURI, ConfigurationError) as exc:  # the caller's URI or options
            raise ValueError(f"invalid MongoDB URI or option: {exc}") from exc
        try:
            check_acknowledged(client.write_concern)
        except ValueError:
            # an AsyncMongoClient has not opened anything yet: it connects on first use
            if not asynchronous:
                client.close()
            raise
    else:
        raise ValueError(
            f"unsupported URI scheme {parts.scheme!r}: use mongodb://, mongodb+srv:// "
            "or mongomock://"
        )
    database = database or unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE
    try:
        return client, client[database][collection]
    except (InvalidName, TypeError) as exc:
        if not asynchronous or scheme == "mongomock":
            client.close()
        raise ValueError(f"invalid database or collection name: {exc}") from exc


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
    client, target = open_client(
        uri, database, collection, max_value_bytes, options, asynchronous=False
    )
    try:
        store = DataStore(
            target, ensure_indexes=ensure_indexes, max_value_bytes=max_value_bytes, clock=clock
        )
    except (TypeError, ValueError):
        client.close()
        raise
    store._owned_client = client
    return store


def check_acknowledged(write_concern: Any) -> None:
    """``ValueError`` for an unacknowledged write concern (``w=0``): pymongo refuses the
    collation that every write of the store carries on an unacknowledged write, so each one
    would fail; and the store could not report a version, a count or a conflict it never
    hears of."""
    if write_concern is not None and not getattr(write_concern, "acknowledged", True):
        raise ValueError(
            "agent-datastore needs acknowledged writes: an unacknowledged write concern "
            f"({write_concern.document}) would make every write fail; use w=1 or "
            '"majority" (the default)'
        )


# The server takes maxTimeMS as a 32-bit count of milliseconds: about 24.8 days.
_MAX_TIMEOUT = (2**31 - 1) / 1000


def check_timeout(timeout: object) -> float:
    """``ensure_indexes``'s timeout, in seconds: positive, and short enough to be sent as the
    build's ``maxTimeMS``."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not 0 < timeout <= _MAX_TIMEOUT:
        raise ValueError(
            f"timeout must be a positive number of seconds up to {_MAX_TIMEOUT:,.0f} "
            f"(MongoDB's longest maxTimeMS), not {timeout!r}"
        )
    return float(timeout)


def _uri_option_names(query: str) -> list[str]:
    pairs = query.replace(";", "&").split("&")
    return [pair.split("=", 1)[0] for pair in pairs if pair]
