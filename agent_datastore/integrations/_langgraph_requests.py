"""The requests a LangGraph batch makes of the store (``DataStoreStore._batch`` yields them, one
command each, or one call of the store service), and the drivers that send them: to a local
store through ``_operations``, synchronously or not, or to the store service through
``_protocol`` and a remote proxy. The only I/O of the LangGraph store."""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any, NamedTuple

from langgraph.store.base import Result

from .. import _core, _protocol
from .. import _operations as ops
from .._async import AsyncDataStore
from .._remote import AsyncRemoteDataStoreProxy, RemoteDataStoreProxy
from .._store import DataStore

__all__ = [
    "ANY_NAMESPACE",
    "TTL_FIELD",
    "Batch",
    "DeleteMany",
    "Find",
    "ListNamespaces",
    "Refresh",
    "Request",
    "SetMany",
    "local_async",
    "local_sync",
    "milliseconds",
    "remote_async",
    "remote_sync",
    "run_async",
    "run_sync",
]

TTL_FIELD = "langgraph_ttl_ms"
"""The metadata field in which every put keeps its item's TTL in milliseconds (``None`` for
none): the store keeps only the expiry date, and a read that refreshes the TTL needs the
length."""

# the namespace a scope needs when a command spans every namespace of the agent: never sent
ANY_NAMESPACE = "default"


# ------------------------------------------------------------------ the requests of a batch
#
# What ``_batch`` asks of the store, one command (or, through the service, one call) each.


class Find(NamedTuple):
    user: str
    namespace: str
    within: str  # "namespace", "subtree" or "agent" (then namespace is not used)
    keys: list[str] | None
    value_filter: dict[str, Any] | None
    limit: int | None
    offset: int


class Refresh(NamedTuple):
    user: str
    items: list[tuple[str, str]]  # (namespace, key)


class ListNamespaces(NamedTuple):
    user: str


class DeleteMany(NamedTuple):
    user: str
    namespace: str
    keys: list[str]


class SetMany(NamedTuple):
    user: str
    namespace: str
    items: dict[str, dict[str, Any]]
    ttl: timedelta | None


Request = Find | Refresh | ListNamespaces | DeleteMany | SetMany
Batch = Generator[Request, Any, list[Result]]


def run_sync(plan: Batch, run: Callable[[Request], Any]) -> list[Result]:
    reply: Any = None
    try:
        while True:
            reply = run(plan.send(reply))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(plan: Batch, run: Callable[[Request], Any]) -> list[Result]:
    reply: Any = None
    try:
        while True:
            reply = await run(plan.send(reply))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _local_operation(
    store: DataStore | AsyncDataStore, agent: str, request: Request
) -> ops.Operation[Any]:
    settings = store._settings()
    if isinstance(request, Find):
        scope = _core.Scope.of(request.user, agent, request.namespace)
        return ops.find_items(
            scope,
            settings,
            within=request.within,
            keys=request.keys,
            value_filter=request.value_filter,
            limit=request.limit,
            offset=request.offset,
        )
    if isinstance(request, Refresh):
        scope = _core.Scope.of(request.user, agent, ANY_NAMESPACE)
        return ops.refresh_expiry(scope, settings, request.items, TTL_FIELD)
    if isinstance(request, ListNamespaces):
        return ops.list_namespaces(_core.Scope.of(request.user, agent, ANY_NAMESPACE), settings)
    scope = _core.Scope.of(request.user, agent, request.namespace)
    if isinstance(request, DeleteMany):
        return ops.delete_many(scope, settings, request.keys)
    metadata = {TTL_FIELD: milliseconds(request.ttl)}
    return ops.set_many(scope, settings, request.items, metadata, request.ttl)


def local_sync(store: DataStore, agent: str) -> Callable[[Request], Any]:
    return lambda request: store._run(_local_operation(store, agent, request))


def local_async(store: AsyncDataStore, agent: str) -> Callable[[Request], Any]:
    return lambda request: store._run(_local_operation(store, agent, request))


def _remote_calls(
    proxy: RemoteDataStoreProxy | AsyncRemoteDataStoreProxy, request: Request
) -> _protocol.Calls:
    """The store service's requests for ``request``; the token names the user (checked
    against each namespace's when the batch was planned) and the agent."""
    limits = proxy._service.limits
    if isinstance(request, ListNamespaces):
        return _remote_namespaces()
    namespace = ANY_NAMESPACE if isinstance(request, Refresh) else request.namespace
    scope = _core.Scope.of(proxy.user_id, proxy.agent_name, namespace)
    if isinstance(request, Find):
        return _protocol.find_items_calls(
            scope,
            within=request.within,
            keys=request.keys,
            value_filter=request.value_filter,
            limit=request.limit,
            offset=request.offset,
            limits=limits,
        )
    if isinstance(request, Refresh):
        return _protocol.refresh_expiry_calls(scope, request.items, TTL_FIELD, limits)
    if isinstance(request, DeleteMany):
        return _protocol.delete_many_calls(scope, request.keys, limits)
    metadata = {TTL_FIELD: milliseconds(request.ttl)}
    return _protocol.set_many_calls(scope, request.items, metadata, request.ttl, limits)


def _remote_namespaces() -> _protocol.Calls:
    # as the remote proxies' list_namespaces, as a call their _drive runs
    answer = yield _protocol.Request("list_namespaces", {})
    return list(answer["result"])


def remote_sync(proxy: RemoteDataStoreProxy) -> Callable[[Request], Any]:
    return lambda request: proxy._drive(_remote_calls(proxy, request))


def remote_async(proxy: AsyncRemoteDataStoreProxy) -> Callable[[Request], Any]:
    return lambda request: proxy._drive(_remote_calls(proxy, request))


def milliseconds(ttl: timedelta | None) -> int | None:
    return None if ttl is None else ttl // timedelta(milliseconds=1)
