"""The asynchronous twin behind the synchronous interface, so that one set of contract tests
runs against both.

``SyncOverAsyncStore`` and ``SyncOverAsyncProxy`` forward every call to an ``AsyncDataStore``
and its proxies, running each coroutine on an event loop of their own in a background
thread. Calls from several threads at once therefore become concurrent tasks on that one
loop, which is how async agent code shares a store.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from agent_datastore import AsyncAgentDataStoreProxy, AsyncDataStore

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncOverAsyncProxy:
    def __init__(self, proxy: AsyncAgentDataStoreProxy, runner: LoopThread, store: Any) -> None:
        self._proxy = proxy
        self._runner = runner
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._proxy, name)
        if not inspect.iscoroutinefunction(attribute):
            # only names and plain attributes: every call to the database must be awaited
            assert name in ("user_id", "agent_name", "namespace"), name
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attribute(*args, **kwargs))

        return call

    def use_namespace(self, namespace: str) -> SyncOverAsyncProxy:
        return SyncOverAsyncProxy(self._proxy.use_namespace(namespace), self._runner, self._store)

    def iter_keys(self, prefix: str | None = None) -> Iterator[str]:
        stream = self._proxy.iter_keys(prefix)  # checks its prefix now, as the sync one does

        def keys() -> Iterator[str]:
            while True:
                try:
                    yield self._runner.run(anext_of(stream))
                except StopAsyncIteration:
                    return

        return keys()

    def __repr__(self) -> str:
        return repr(self._proxy)


def unwrapped(proxy: Any) -> Any:
    """The package's own proxy behind a test's ``data_store``."""
    return proxy._proxy if isinstance(proxy, SyncOverAsyncProxy) else proxy


async def anext_of(stream: Any) -> Any:
    return await stream.__anext__()


class SyncOverAsyncStore:
    """An ``AsyncDataStore`` with ``DataStore``'s interface. ``collection`` is a synchronous
    handle on the same collection, for the tests' own inspection."""

    def __init__(self, store: AsyncDataStore, collection: Any) -> None:
        self.async_store = store
        self.collection = collection
        self._runner = LoopThread()

    def proxy(self, user_id: str, agent_name: str, namespace: str = "default") -> Any:
        return SyncOverAsyncProxy(
            self.async_store.proxy(user_id, agent_name, namespace), self._runner, self
        )

    def ensure_indexes(self) -> None:
        self._runner.run(self.async_store.ensure_indexes())

    def now(self) -> Any:
        return self.async_store.now()

    @property
    def max_value_bytes(self) -> int:
        return self.async_store.max_value_bytes

    def close(self) -> None:
        try:
            self._runner.run(self.async_store.aclose())
        finally:
            self._runner.stop()

    def __enter__(self) -> SyncOverAsyncStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
