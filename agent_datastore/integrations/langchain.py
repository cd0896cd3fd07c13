"""``DataStoreKV``: LangChain's key-value store interface (``BaseStore[str, Any]``) over a
proxy of this package, local or remote, synchronous or asynchronous.

Each batch method is one call of the proxy, so one command to MongoDB (or, through a remote
proxy, one request to the store service while the batch fits its limits): ``mget`` is
``get_many``, ``mset`` is ``set_many``, ``mdelete`` is ``delete_many``, and ``yield_keys``
streams ``iter_keys``. Keys and values follow the proxy's rules: keys are non-empty ``str``,
values are JSON values, and anything else raises the proxy's own ``TypeError`` or
``ValueError`` before anything is sent. Needs the ``langchain`` extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, NoReturn

try:
    from langchain_core.stores import BaseStore
except ImportError as exc:  # the langchain extra is not installed
    raise ImportError(
        "agent_datastore.integrations.langchain needs langchain-core: "
        "pip install 'agent-datastore[langchain]'"
    ) from exc

from .._async import AsyncAgentDataStoreProxy
from .._remote import AsyncRemoteDataStoreProxy, RemoteDataStoreProxy
from .._store import AgentDataStoreProxy

__all__ = ["DataStoreKV"]

SyncProxy = AgentDataStoreProxy | RemoteDataStoreProxy
AsyncProxy = AsyncAgentDataStoreProxy | AsyncRemoteDataStoreProxy
_SYNC_PROXIES = (AgentDataStoreProxy, RemoteDataStoreProxy)
_ASYNC_PROXIES = (AsyncAgentDataStoreProxy, AsyncRemoteDataStoreProxy)


class DataStoreKV(BaseStore[str, Any]):
    """A LangChain ``BaseStore[str, Any]`` holding its items in one namespace of one user's
    agent: the scope of ``proxy``.

    Over a synchronous proxy (``AgentDataStoreProxy``, ``RemoteDataStoreProxy``) the
    synchronous methods call the proxy, and the ``a``-methods run them in the event loop's
    default executor, as LangChain's ``BaseStore`` does, so the loop never waits on the
    database. Over an asynchronous proxy (``AsyncAgentDataStoreProxy``,
    ``AsyncRemoteDataStoreProxy``) the ``a``-methods await the proxy and the synchronous
    methods raise ``TypeError``: an async proxy belongs to its event loop, so no plain call
    can run it without blocking that loop or using it from another one.
    """

    def __init__(self, proxy: SyncProxy | AsyncProxy) -> None:
        self._sync_proxy: SyncProxy | None = None
        self._async_proxy: AsyncProxy | None = None
        if isinstance(proxy, _SYNC_PROXIES):
            self._sync_proxy = proxy
        elif isinstance(proxy, _ASYNC_PROXIES):
            self._async_proxy = proxy
        else:
            raise TypeError(
                "proxy must be an AgentDataStoreProxy, AsyncAgentDataStoreProxy, "
                f"RemoteDataStoreProxy or AsyncRemoteDataStoreProxy, not {type(proxy).__name__}"
            )

    @property
    def proxy(self) -> SyncProxy | AsyncProxy:
        """The proxy this store reads and writes through."""
        if self._sync_proxy is not None:
            return self._sync_proxy
        assert self._async_proxy is not None
        return self._async_proxy

    def __repr__(self) -> str:
        return f"DataStoreKV({self.proxy!r})"

    def _sync(self, method: str) -> SyncProxy:
        if self._sync_proxy is None:
            self._refuse_sync_call(method)
        return self._sync_proxy

    def _refuse_sync_call(self, method: str) -> NoReturn:
        name = type(self._async_proxy).__name__
        if method == "yield_keys":
            instead = "'async for key in store.ayield_keys(...)'"
        else:
            instead = f"'await store.a{method}(...)'"
        raise TypeError(
            f"DataStoreKV.{method} cannot call an {name}, whose methods are coroutines: "
            f"use {instead}, or build the DataStoreKV over a synchronous proxy"
        )

    # ------------------------------------------------------------------ synchronous

    def mget(self, keys: Sequence[str]) -> list[Any | None]:
        """The value of each key, in the order asked, ``None`` for a key that has none (a
        stored JSON ``null`` reads as ``None`` too): one ``get_many``."""
        proxy = self._sync("mget")
        asked = _reusable(keys)
        found = proxy.get_many(asked)
        return [found.get(key) for key in asked]

    def mset(self, key_value_pairs: Sequence[tuple[str, Any]]) -> None:
        """Store each value under its key (a key given twice keeps its last value): one
        ``set_many``, which checks every item before sending any."""
        self._sync("mset").set_many(dict(key_value_pairs))

    def mdelete(self, keys: Sequence[str]) -> None:
        """Delete the keys that exist; missing keys are no error: one ``delete_many``."""
        self._sync("mdelete").delete_many(keys)

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """The keys that start with ``prefix`` (every key without one), sorted by their
        UTF-8 bytes, streamed by ``iter_keys`` a page of 1,000 keys at a time. The prefix is
        a literal string and is checked at the call."""
        keys = self._sync("yield_keys").iter_keys(prefix)
        return _stream(keys)

    # ------------------------------------------------------------------ asynchronous

    async def amget(self, keys: Sequence[str]) -> list[Any | None]:
        """As ``mget``; awaits an asynchronous proxy's ``get_many``."""
        if self._async_proxy is None:
            return await super().amget(keys)
        asked = _reusable(keys)
        found = await self._async_proxy.get_many(asked)
        return [found.get(key) for key in asked]

    async def amset(self, key_value_pairs: Sequence[tuple[str, Any]]) -> None:
        """As ``mset``; awaits an asynchronous proxy's ``set_many``."""
        if self._async_proxy is None:
            return await super().amset(key_value_pairs)
        await self._async_proxy.set_many(dict(key_value_pairs))
        return None

    async def amdelete(self, keys: Sequence[str]) -> None:
        """As ``mdelete``; awaits an asynchronous proxy's ``delete_many``."""
        if self._async_proxy is None:
            return await super().amdelete(keys)
        await self._async_proxy.delete_many(keys)
        return None

    def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        """As ``yield_keys``, for ``async for``; streams an asynchronous proxy's
        ``iter_keys``."""
        if self._async_proxy is None:
            return super().ayield_keys(prefix=prefix)
        return _astream(self._async_proxy.iter_keys(prefix))


def _reusable(keys: Sequence[str]) -> Sequence[str]:
    """``keys`` as given, unless it is an iterator, which the proxy would consume before the
    answer is put in order: then its keys in a list."""
    if isinstance(keys, Iterator):
        return list(keys)
    return keys


def _stream(keys: Iterator[str]) -> Iterator[str]:
    # a generator of our own, whatever iterator the proxy returns: LangChain's standard tests
    # (and callers that close it early) expect one
    yield from keys


async def _astream(keys: AsyncIterator[str]) -> AsyncIterator[str]:
    async for key in keys:
        yield key
