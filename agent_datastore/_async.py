"""The asynchronous store: ``connect_async``, ``AsyncDataStore`` and
``AsyncAgentDataStoreProxy``, on pymongo's own ``AsyncMongoClient`` (no threads, no Motor).

Every method runs the same operation from ``_operations`` as its synchronous twin, so it
checks the same arguments, sends the same commands and returns or raises the same things;
only the I/O differs. The embedded store works here too, through
``_embedded.AsyncLockedCollection``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import pymongo
from pymongo.collection import Collection
from pymongo.errors import ServerSelectionTimeoutError

from . import _core, _embedded
from . import _operations as ops
from ._exceptions import translate
from ._items import Item, ItemInfo
from ._store import DEFAULT_COLLECTION, ProxyBase, StoreBase, check_timeout, open_client

__all__ = ["AsyncAgentDataStoreProxy", "AsyncDataStore", "connect_async", "run_async"]

T = TypeVar("T")


async def run_async(operation: ops.Operation[T], collection: Any, *, off_loop: bool = False) -> T:
    """``_operations.run_sync`` for an ``AsyncCollection``-like object: each command awaited,
    a ``find`` or an ``aggregate`` drained with ``to_list`` (or a ``find`` read by
    ``take_within_async``).

    With ``off_loop``, the operation's own steps (validation, encoding, reading the replies)
    run in a worker thread, so that a large value is encoded and decoded without holding the
    event loop; only the driver calls run on it. The store service asks for that for large
    requests and answers."""
    reply: Any = None
    failure: BaseException | None = None
    keys: tuple[str, ...] = ()
    while True:
        try:
            if off_loop:
                command = await asyncio.to_thread(_advance, operation, reply, failure)
            else:
                command = operation.send(reply) if failure is None else operation.throw(failure)
        except _Finished as finished:
            return finished.value  # type: ignore[no-any-return]
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]
        except ops.DRIVER_ERRORS as exc:  # the operation did not handle it: translate it
            raise translate(exc, keys) from exc
        keys, failure = command.keys, None
        target = None
        try:
            target = await collection()
            reply = await _call(target, command)
        except ServerSelectionTimeoutError as exc:
            reply, failure = await _select_again(exc, target, collection, command)
        except ops.DRIVER_ERRORS as exc:
            reply, failure = None, exc


async def _call(target: Any, command: ops.Command) -> Any:
    method = getattr(target, command.method)
    if command.method == "find" and command.max_bytes:
        cursor = method(*command.args, **command.kwargs)
        return await take_within_async(cursor, command.max_bytes)
    if command.method == "find":
        return await method(*command.args, **command.kwargs).to_list(None)
    if command.method == "aggregate":  # a coroutine that opens the cursor
        cursor = await method(*command.args, **command.kwargs)
        return await cursor.to_list(None)
    return await method(*command.args, **command.kwargs)


async def _select_again(
    exc: ServerSelectionTimeoutError,
    target: Any,
    collection: Callable[[], Awaitable[Any]],
    command: ops.Command,
) -> tuple[Any, BaseException | None]:
    """``_operations._select_again``, awaited."""
    deadline = ops.failover_deadline(target)
    while deadline is not None and ops.members_answer(target) and time.monotonic() < deadline:
        try:
            target = await collection()
            return await _call(target, command), None
        except ServerSelectionTimeoutError as again:
            exc = again
        except ops.DRIVER_ERRORS as other:
            return None, other
    return None, exc


class _Finished(Exception):
    """An operation's return, carried out of a worker thread: a ``StopIteration`` cannot
    cross into a future."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


def _advance(operation: ops.Operation[Any], reply: Any, failure: BaseException | None) -> Any:
    try:
        return operation.send(reply) if failure is None else operation.throw(failure)
    except StopIteration as finished:
        raise _Finished(finished.value) from None


async def take_within_async(cursor: Any, max_bytes: int) -> tuple[list[Any], bool]:
    """``_operations.take_within`` for an ``AsyncCursor``."""
    documents: list[Any] = []
    total = 0
    async for document in cursor:
        total += document.get(ops.ANSWER_SIZE) or 0
        if documents and total > max_bytes:
            await cursor.close()
            return documents, False
        documents.append(document)
    return documents, True


class AsyncDataStore(StoreBase):
    """``DataStore``'s asynchronous twin, over a pymongo ``AsyncCollection`` (or a mongomock-ng
    collection, for the embedded store) that the caller owns; ``connect_async()`` makes one
    that owns its client. Use ``async with`` or ``await store.aclose()``.
    """

    def __init__(
        self,
        collection: Any,
        *,
        ensure_indexes: bool = True,
        max_value_bytes: int | None = None,
        clock: _core.Clock | None = None,
    ) -> None:
        if isinstance(collection, Collection):
            raise TypeError(
                "AsyncDataStore needs a pymongo AsyncCollection; use DataStore for a Collection"
            )
        super().__init__(
            collection,
            ensure_indexes=ensure_indexes,
            max_value_bytes=max_value_bytes,
            clock=clock,
        )
        target = self._locked_target()
        if _embedded.is_fake_collection(collection):
            target = _embedded.AsyncLockedCollection(target)
        self._target = target
        self._index_attempt: asyncio.Future[None] | None = None

    @property
    def collection(self) -> Any:
        """The collection this store reads and writes, as it was given or created."""
        return self._collection

    def proxy(
        self, user_id: str, agent_name: str, namespace: str = "default"
    ) -> AsyncAgentDataStoreProxy:
        """The data store of one user's agent, in ``namespace``."""
        return AsyncAgentDataStoreProxy(self, user_id, agent_name, namespace)

    async def ensure_indexes(self, *, timeout: float = _core.ENSURE_INDEXES_TIMEOUT) -> None:
        """See ``DataStore.ensure_indexes``: create the missing indexes and wait for the build,
        at most ``timeout`` seconds (default a day)."""
        self._check_open()
        with pymongo.timeout(check_timeout(timeout)):
            await run_async(ops.ensure_indexes(), self._raw_collection)
        self._settle_indexes(True)

    async def _raw_collection(self) -> Any:
        return self._target

    async def _prepare_indexes(self) -> None:
        self._settle_indexes(await run_async(ops.prepare_indexes(), self._raw_collection))

    async def _ready_collection(self) -> Any:
        """The collection to send commands to, its indexes checked on first use, as
        ``DataStore._ready_collection`` says. Tasks that arrive while the first attempt is
        under way await that one and share its outcome; the next call after a failure tries
        again. One task's cancellation does not cancel the others' attempt. After a build cut
        off at its bound, one task tries again once ``INDEX_RETRY_INTERVAL`` has passed, and
        the others go on without waiting for it."""
        self._check_open()
        if self._indexes_ready:
            return self._target
        attempt = self._index_attempt
        if self._index_retry_at is None:
            if attempt is None or attempt.done():
                attempt = self._start_index_attempt()
            await asyncio.shield(attempt)
        elif self._index_retry_due() and (attempt is None or attempt.done()):
            await asyncio.shield(self._start_index_attempt())
        return self._target

    def _start_index_attempt(self) -> asyncio.Future[None]:
        attempt = self._index_attempt = asyncio.ensure_future(self._prepare_indexes())
        # its failure is raised to every waiter; this keeps asyncio from reporting it as never
        # retrieved when all of them were cancelled
        attempt.add_done_callback(_retrieve_failure)
        return attempt

    async def _run(self, operation: ops.Operation[T], *, off_loop: bool = False) -> T:
        return await run_async(operation, self._ready_collection, off_loop=off_loop)

    async def aclose(self) -> None:
        """Close the client if this store owns it (it came from ``connect_async``).
        Idempotent."""
        self._closed = True
        client = self._owned_client
        if client is not None:
            closing = client.close()
            if asyncio.iscoroutine(closing):  # AsyncMongoClient; the fake closes at once
                await closing  # RuntimeError from another event loop than the store's
            self._owned_client = None

    async def __aenter__(self) -> AsyncDataStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncAgentDataStoreProxy(ProxyBase):
    """``AgentDataStoreProxy``'s asynchronous twin: the same methods, arguments, results and
    errors, awaited (``use_namespace`` is a plain call, and ``iter_keys`` an async iterator).
    """

    __slots__ = ()
    _store_class = AsyncDataStore
    _store: AsyncDataStore

    def __init__(
        self, store: AsyncDataStore, user_id: str, agent_name: str, namespace: str = "default"
    ) -> None:
        super().__init__(store, user_id, agent_name, namespace)

    async def get(self, key: str, default: Any = None) -> Any:
        """See ``AgentDataStoreProxy.get``."""
        return await self._store._run(ops.get(self._scope, self._store._settings(), key, default))

    async def get_item(self, key: str) -> Item | None:
        """See ``AgentDataStoreProxy.get_item``."""
        return await self._store._run(ops.get_item(self._scope, self._store._settings(), key))

    async def set(
        self,
        key: str,
        value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
        if_version: int | None = None,
    ) -> None:
        """See ``AgentDataStoreProxy.set``."""
        settings = self._store._settings()
        await self._store._run(
            ops.put(self._scope, settings, key, value, metadata, ttl, if_version)
        )

    async def increment(
        self, key: str, amount: int = 1, *, ttl: float | timedelta | None = None
    ) -> int:
        """See ``AgentDataStoreProxy.increment``."""
        settings = self._store._settings()
        return await self._store._run(ops.increment(self._scope, settings, key, amount, ttl))

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """See ``AgentDataStoreProxy.delete``."""
        settings = self._store._settings()
        return await self._store._run(ops.delete(self._scope, settings, key, if_version))

    async def list_keys(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[str]:
        """See ``AgentDataStoreProxy.list_keys``."""
        settings = self._store._settings()
        return await self._store._run(
            ops.list_keys(self._scope, settings, prefix, limit, start_after)
        )

    def iter_keys(self, prefix: str | None = None) -> AsyncIterator[str]:
        """See ``AgentDataStoreProxy.iter_keys``: ``async for key in data_store.iter_keys()``.
        The prefix is checked at the call."""
        checked_prefix = _core.check_prefix(prefix)
        return self._iter_keys(checked_prefix)

    async def _iter_keys(self, prefix: str | None) -> AsyncIterator[str]:
        start_after: str | None = None
        while True:
            # the page starts after a key as stored (not re-checked as an argument would be)
            page_filter = self._scope.keys_filter(prefix, self._store.now(), start_after)
            page = await self._store._run(ops.key_page(page_filter, _core.KEY_PAGE_SIZE))
            for key in page:
                yield key
            start_after = ops.next_page_start(page)
            if start_after is None:
                return

    async def list_items(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[ItemInfo]:
        """See ``AgentDataStoreProxy.list_items``."""
        settings = self._store._settings()
        return await self._store._run(
            ops.list_items(self._scope, settings, prefix, limit, start_after)
        )

    async def list_namespaces(self) -> list[str]:
        """See ``AgentDataStoreProxy.list_namespaces``."""
        return await self._store._run(ops.list_namespaces(self._scope, self._store._settings()))

    def use_namespace(self, namespace: str) -> AsyncAgentDataStoreProxy:
        """A new proxy for the same user and agent in ``namespace``; this one is unchanged."""
        return AsyncAgentDataStoreProxy(
            self._store, self._scope.user_id, self._scope.agent_name, namespace
        )

    async def clear(self) -> int:
        """See ``AgentDataStoreProxy.clear``."""
        return await self._store._run(ops.clear(self._scope, self._store._settings()))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """See ``AgentDataStoreProxy.get_many``."""
        return await self._store._run(ops.get_many(self._scope, self._store._settings(), keys))

    async def delete_many(self, keys: Iterable[str]) -> int:
        """See ``AgentDataStoreProxy.delete_many``."""
        settings = self._store._settings()
        return await self._store._run(ops.delete_many(self._scope, settings, keys))

    async def set_many(
        self,
        items: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        """See ``AgentDataStoreProxy.set_many``."""
        settings = self._store._settings()
        return await self._store._run(ops.set_many(self._scope, settings, items, metadata, ttl))


def _retrieve_failure(attempt: asyncio.Future[None]) -> None:
    if not attempt.cancelled():
        attempt.exception()


def connect_async(
    uri: str | None = None,
    *,
    database: str | None = None,
    collection: str = DEFAULT_COLLECTION,
    ensure_indexes: bool = True,
    max_value_bytes: int | None = None,
    clock: _core.Clock | None = None,
    **options: Any,
) -> AsyncDataStore:
    """``connect``'s asynchronous twin: the same URIs, defaults and options, with pymongo's
    ``AsyncMongoClient`` (or the embedded store for ``mongomock://``). A plain call: it
    neither blocks nor waits for the server, which is reached on first use.
    """
    if clock is not None and not callable(clock):  # before a client exists to leak
        raise TypeError(f"clock must be a function, not {type(clock).__name__}")
    client, target = open_client(
        uri, database, collection, max_value_bytes, options, asynchronous=True
    )
    store = AsyncDataStore(
        target, ensure_indexes=ensure_indexes, max_value_bytes=max_value_bytes, clock=clock
    )
    store._owned_client = client
    return store
