"""``DataStoreStore``: LangGraph's long-term memory store (``BaseStore``) over this package's
store, local or remote, synchronous or asynchronous.

A LangGraph namespace ``("u1", "memories")`` is the namespace string ``"u1.memories"`` (labels
joined with ``.``, which LangGraph forbids inside a label, so the mapping is reversible) of
one user's agent: the user fixed at construction (``user_id``), or the label of each namespace
that ``user_label`` names. Keys are the store's keys, values its JSON values (a dict, as
LangGraph defines them).

``batch`` and ``abatch`` check every operation before anything is sent, then send as few
commands as the store allows: all gets of one (user, namespace) as one query, each search as
one query, all namespace listings of one user as one aggregation, the TTL refresh of what the
reads returned as one update per user, the deletes of one (user, namespace) as one
``delete_many`` and the puts of one (user, namespace, ttl) as one ``set_many``. Reads see the
store as it was before the batch's writes, as in LangGraph's ``InMemoryStore``. The batch
logic is written once (``_batch``, a generator of requests without I/O) and run by a driver
for each kind of store. Needs the ``langgraph`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NoReturn

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        IndexConfig,
        InvalidNamespaceError,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        TTLConfig,
    )
except ImportError as exc:  # the langgraph extra is not installed
    raise ImportError(
        "agent_datastore.integrations.langgraph needs langgraph: "
        "pip install 'agent-datastore[langgraph]'"
    ) from exc

from .. import _codec, _core, _filters
from .._async import AsyncDataStore
from .._operations import FoundItem
from .._remote import AsyncRemoteDataStoreProxy, RemoteDataStoreProxy
from .._store import DataStore
from ._langgraph_requests import (
    ANY_NAMESPACE,
    TTL_FIELD,
    Batch,
    DeleteMany,
    Find,
    ListNamespaces,
    Refresh,
    SetMany,
    local_async,
    local_sync,
    milliseconds,
    remote_async,
    remote_sync,
    run_async,
    run_sync,
)

__all__ = ["TTL_FIELD", "DataStoreStore"]

SyncStore = DataStore | RemoteDataStoreProxy
AsyncStore = AsyncDataStore | AsyncRemoteDataStoreProxy
_SYNC_STORES = (DataStore, RemoteDataStoreProxy)
_ASYNC_STORES = (AsyncDataStore, AsyncRemoteDataStoreProxy)
_REMOTE_STORES = (RemoteDataStoreProxy, AsyncRemoteDataStoreProxy)

_TTL_CONFIG_KEYS = frozenset(
    {"refresh_on_read", "default_ttl", "sweep_interval_minutes", "omit_expired"}
)


class DataStoreStore(BaseStore):
    """A LangGraph ``BaseStore`` whose items are this package's items of one agent,
    ``agent_name``, each under the user its namespace belongs to.

    ``store`` is a ``DataStore`` or an ``AsyncDataStore`` (then exactly one of ``user_id``
    and ``user_label`` says whose items a namespace holds), or a ``RemoteDataStoreProxy`` or
    an ``AsyncRemoteDataStoreProxy`` of the store service, whose token fixes the user and the
    agent: ``agent_name`` and ``user_id`` must then be the token's, and with ``user_label``
    a namespace whose label is another user raises ``PermissionError`` before anything is
    sent.

    ``user_id`` fixes the user of every namespace. ``user_label=k`` takes it from label ``k``
    of each namespace (``user_label=0`` for LangGraph's ``(user_id, "memories")`` shape); a
    search or a listing whose prefix does not fix that label would reach several users and
    raises ``ValueError``. Either way the namespace string is the whole tuple joined with
    ``.``: ``("u1", "memories")`` is ``u1.memories`` in the CLI.

    ``ttl`` is LangGraph's ``TTLConfig``: ``default_ttl`` (minutes) for puts that give none,
    ``refresh_on_read`` (default ``True``) for reads that do not say; ``sweep_interval_minutes``
    is accepted and unused, since MongoDB's TTL monitor deletes expired items, and expired
    items are never returned. Semantic search is not supported: an ``index`` configuration,
    or a search with a ``query``, raises ``NotImplementedError``.

    Over a synchronous store the ``a``-methods run the synchronous batch in a thread; over an
    asynchronous one they are native, and a synchronous method called from another thread
    while the store's event loop runs (a synchronous node of a graph run with ``ainvoke``) is
    run on that loop and waited for; on the loop's own thread, or with no loop running, it
    raises ``TypeError``.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        store: SyncStore | AsyncStore,
        *,
        agent_name: str,
        user_id: str | None = None,
        user_label: int | None = None,
        ttl: TTLConfig | None = None,
        index: IndexConfig | None = None,
    ) -> None:
        if index is not None:
            raise NotImplementedError(
                "DataStoreStore does not support semantic search: build it without index="
            )
        if not isinstance(store, (*_SYNC_STORES, *_ASYNC_STORES)):
            raise TypeError(
                "store must be a DataStore, AsyncDataStore, RemoteDataStoreProxy or "
                f"AsyncRemoteDataStoreProxy, not {type(store).__name__}"
            )
        self._store = store
        self._agent_name = _core.check_name(agent_name, "agent_name")
        if user_id is not None and user_label is not None:
            raise ValueError("give user_id or user_label, not both")
        if user_label is not None and (
            isinstance(user_label, bool) or not isinstance(user_label, int)
        ):
            raise TypeError(f"user_label must be an int, not {type(user_label).__name__}")
        if user_label is not None and user_label < 0:
            raise ValueError(f"user_label must be 0 or more, not {user_label}")
        self._user_label = user_label
        self._user_id = None if user_id is None else _core.check_name(user_id, "user_id")
        # the user the service's token is for: every namespace must be that user's
        self._token_user: str | None = None
        if isinstance(store, _REMOTE_STORES):
            if self._agent_name != store.agent_name:
                raise ValueError(
                    f"agent_name {self._agent_name!r} is not the token's agent {store.agent_name!r}"
                )
            if self._user_id is not None and self._user_id != store.user_id:
                raise ValueError(
                    f"user_id {self._user_id!r} is not the token's user {store.user_id!r}"
                )
            self._token_user = store.user_id
            if user_label is None:
                self._user_id = store.user_id
        elif user_id is None and user_label is None:
            raise ValueError(
                "give user_id (every namespace is that user's) or user_label (the label of "
                "each namespace that names its user)"
            )
        self.ttl_config = _check_ttl_config(ttl)
        # The event loop an asynchronous store runs on (the one it is built in, else the last
        # that ran abatch): a synchronous call from another thread (a graph's synchronous node
        # under ainvoke runs in a worker thread) is handed to it and waited for there.
        self._loop: asyncio.AbstractEventLoop | None = None
        if isinstance(store, _ASYNC_STORES):
            with contextlib.suppress(RuntimeError):  # built outside any loop
                self._loop = asyncio.get_running_loop()

    @property
    def store(self) -> SyncStore | AsyncStore:
        """The store (or remote proxy) this store reads and writes through."""
        return self._store

    @property
    def agent_name(self) -> str:
        return self._agent_name

    @property
    def user_id(self) -> str | None:
        """The user of every namespace; ``None`` when ``user_label`` names it."""
        return self._user_id

    @property
    def user_label(self) -> int | None:
        return self._user_label

    def __repr__(self) -> str:
        whose = (
            f"user_id={self._user_id!r}"
            if self._user_label is None
            else f"user_label={self._user_label}"
        )
        return f"DataStoreStore({self._store!r}, agent_name={self._agent_name!r}, {whose})"

    # ------------------------------------------------------------------ batches

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` (see the class): their results in order, ``None`` for each put."""
        store = self._store
        if isinstance(store, DataStore):
            return run_sync(
                self._batch(ops, store.max_value_bytes, store.now()),
                local_sync(store, self._agent_name),
            )
        if isinstance(store, RemoteDataStoreProxy):
            return run_sync(
                self._batch(ops, _core.MAX_DOCUMENT_BYTES, _core.utc_now()), remote_sync(store)
            )
        loop = self._loop
        if loop is not None and loop.is_running() and not _runs_on(loop):
            return asyncio.run_coroutine_threadsafe(self.abatch(list(ops)), loop).result()
        self._refuse_sync_call()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """As ``batch``: awaited over an asynchronous store, in a thread over a synchronous
        one."""
        store = self._store
        if isinstance(store, _ASYNC_STORES):
            self._loop = asyncio.get_running_loop()
        if isinstance(store, AsyncDataStore):
            plan = self._batch(ops, store.max_value_bytes, store.now())
            return await run_async(plan, local_async(store, self._agent_name))
        if isinstance(store, AsyncRemoteDataStoreProxy):
            plan = self._batch(ops, _core.MAX_DOCUMENT_BYTES, _core.utc_now())
            return await run_async(plan, remote_async(store))
        return await asyncio.to_thread(self.batch, list(ops))

    def _refuse_sync_call(self) -> NoReturn:
        name = type(self._store).__name__
        raise TypeError(
            f"DataStoreStore over an {name} runs only asynchronously: use the a-methods "
            "(abatch, aget, aput, asearch, adelete, alist_namespaces) and a graph's "
            "ainvoke/astream, or build the DataStoreStore over a synchronous store (a "
            "synchronous call is served only from another thread while the store's event "
            "loop runs, as in a synchronous node of a graph run with ainvoke)"
        )

    def _batch(self, operations: Iterable[Op], max_value_bytes: int, now: datetime) -> Batch:
        """The requests that answer ``operations``, yielded one at a time (each sent back its
        result), and the operations' results returned. Every operation is checked before the
        first request, so that an invalid one leaves the store untouched."""
        ops_ = list(operations)
        # (user, namespace) -> key -> the indexes of the GetOps asking for it
        gets: dict[tuple[str, str], dict[str, list[int]]] = {}
        searches: list[tuple[int, Find | None, bool]] = []
        listings: dict[str, list[int]] = {}
        puts: dict[tuple[str, str, str], tuple[dict[str, Any] | None, timedelta | None]] = {}
        writers: dict[tuple[str, str, timedelta | None], Callable[[str, Any, int], Any]] = {}
        for index, op in enumerate(ops_):
            if isinstance(op, GetOp):
                user, namespace = self._user_and_namespace(op.namespace)
                key = _core.check_key(op.key)
                gets.setdefault((user, namespace), {}).setdefault(key, []).append(index)
            elif isinstance(op, SearchOp):
                searches.append((index, self._find_of(op), bool(op.refresh_ttl)))
            elif isinstance(op, ListNamespacesOp):
                _check_listing(op)
                listings.setdefault(self._listing_user(op), []).append(index)
            elif isinstance(op, PutOp):
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                if op.namespace[0] == "langgraph":
                    raise InvalidNamespaceError(
                        f'Root label for namespace cannot be "langgraph". Got: {op.namespace}'
                    )
                user, namespace = self._user_and_namespace(op.namespace)
                key = _core.check_key(op.key)
                if op.value is None:
                    puts[(user, namespace, key)] = (None, None)
                    continue
                if not isinstance(op.value, Mapping):
                    raise TypeError(f"value must be a dict, not {type(op.value).__name__}")
                value = dict(op.value)
                ttl = _ttl_of(op.ttl)
                group = (user, namespace, ttl)
                writer = writers.get(group)
                if writer is None:
                    scope = _core.Scope.of(user, self._agent_name, namespace)
                    metadata = _core.check_metadata({TTL_FIELD: milliseconds(ttl)})
                    writer = writers[group] = scope.set_writer(metadata, now, ttl=ttl)
                writer(key, value, max_value_bytes)  # its checks; the write is built again
                puts[(user, namespace, key)] = (value, ttl)
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")

        results: list[Result] = [None] * len(ops_)
        refresh: dict[str, dict[tuple[str, str], None]] = {}

        def read(user: str, found: FoundItem, wants_refresh: bool) -> None:
            if wants_refresh and _expires_by_ttl(found):
                refresh.setdefault(user, {})[(found.namespace, found.item.key)] = None

        for (user, namespace), asked in gets.items():
            request = Find(user, namespace, "namespace", list(asked), None, None, 0)
            found_items: list[FoundItem] = yield request
            by_key = {found.item.key: found for found in found_items}
            for key, indexes in asked.items():
                found = by_key.get(key)
                for index in indexes:
                    results[index] = None if found is None else _item(found)
                if found is not None:
                    wants = any(ops_[i].refresh_ttl for i in indexes)  # type: ignore[union-attr]
                    read(user, found, wants)

        for index, find, wants_refresh in searches:
            if find is None:  # limit=0: nothing to ask
                results[index] = []
                continue
            found_items = yield find
            results[index] = [_search_item(found) for found in found_items]
            for found in found_items:
                read(find.user, found, wants_refresh)

        for user, indexes in listings.items():
            if all(ops_[i].limit == 0 for i in indexes):  # type: ignore[union-attr]
                names: list[str] = []
            else:
                names = yield ListNamespaces(user)
            namespaces = [labels for labels in map(_labels_of, names) if labels is not None]
            if self._user_label is not None:
                k = self._user_label
                namespaces = [labels for labels in namespaces if labels[k : k + 1] == (user,)]
            for index in indexes:
                op = ops_[index]
                assert isinstance(op, ListNamespacesOp)
                results[index] = _listing(op, namespaces)

        for user, pairs in refresh.items():
            yield Refresh(user, list(pairs))

        deletes: dict[tuple[str, str], list[str]] = {}
        sets: dict[tuple[str, str, timedelta | None], dict[str, dict[str, Any]]] = {}
        for (user, namespace, key), (stored, ttl) in puts.items():
            if stored is None:
                deletes.setdefault((user, namespace), []).append(key)
            else:
                sets.setdefault((user, namespace, ttl), {})[key] = stored
        for (user, namespace), keys in deletes.items():
            yield DeleteMany(user, namespace, keys)
        for (user, namespace, ttl), items in sets.items():
            yield SetMany(user, namespace, items, ttl)
        return results

    # ------------------------------------------------------------------ namespaces and users

    def _user_and_namespace(self, labels: object) -> tuple[str, str]:
        """The user whose item a namespace tuple holds, and its namespace string."""
        checked = _check_labels(labels)
        if not checked:
            raise InvalidNamespaceError("Namespace cannot be empty.")
        return self._user_of(checked), _namespace_string(checked)

    def _user_of(self, labels: tuple[str, ...]) -> str:
        if self._user_label is None:
            assert self._user_id is not None
            return self._user_id
        k = self._user_label
        if len(labels) <= k:
            raise InvalidNamespaceError(
                f"namespace {labels} has no label {k}, which names its user (user_label={k})"
            )
        return self._checked_user(labels[k])

    def _checked_user(self, user: str) -> str:
        try:
            _core.check_name(user, "user label")
        except ValueError as exc:
            raise InvalidNamespaceError(str(exc)) from None
        if self._token_user is not None and user != self._token_user:
            raise PermissionError(
                f"the store service's token is for user {self._token_user!r}, not {user!r}"
            )
        return user

    def _unfixed(self, what: str) -> NoReturn:
        k = self._user_label
        raise ValueError(
            f"{what} does not fix the user label (label {k} of the namespace, user_label={k}): "
            "it would reach several users' items; give that label"
        )

    def _find_of(self, op: SearchOp) -> Find | None:
        """The query of a search, ``None`` when it asks for no item (``limit=0``)."""
        if op.query:
            raise NotImplementedError(
                "DataStoreStore does not support semantic search: search without query="
            )
        limit = _check_count(op.limit, "limit")
        offset = _check_count(op.offset, "offset")
        prefix = _check_labels(op.namespace_prefix)
        value_filter = op.filter or None
        if value_filter is not None and not isinstance(value_filter, dict):
            raise TypeError(f"filter must be a dict or None, not {type(value_filter).__name__}")
        _filters.value_query(value_filter)  # its refusals now, before any read of the batch
        if self._user_label is not None and len(prefix) <= self._user_label:
            self._unfixed(f"search prefix {prefix}")
        if prefix:
            user, namespace = self._user_of(prefix), _namespace_string(prefix)
            within = "subtree"
        else:
            assert self._user_id is not None
            user, namespace, within = self._user_id, ANY_NAMESPACE, "agent"
        if limit == 0:
            return None
        return Find(user, namespace, within, None, value_filter, limit, offset)

    def _listing_user(self, op: ListNamespacesOp) -> str:
        if self._user_label is None:
            assert self._user_id is not None
            return self._user_id
        k = self._user_label
        for condition in op.match_conditions or ():
            if condition.match_type == "prefix" and len(condition.path) > k:
                label = condition.path[k]
                if label != "*":
                    return self._checked_user(label)
        self._unfixed("list_namespaces without a prefix that names it")


# ------------------------------------------------------------------ helpers


def _runs_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop`` (where waiting for it would hang)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _check_labels(labels: object) -> tuple[str, ...]:
    """A namespace tuple as LangGraph allows it (``validate_op_namespace``'s rules), whose
    namespace string the store can hold."""
    if not isinstance(labels, tuple):
        raise InvalidNamespaceError(
            f"namespace must be a tuple of str, not {type(labels).__name__}"
        )
    for label in labels:
        if not isinstance(label, str):
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} found in {labels}: labels must be "
                f"strings, not {type(label).__name__}"
            )
        if not label:
            raise InvalidNamespaceError(f"Namespace labels cannot be empty strings: {labels}")
        if "." in label:
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} found in {labels}: labels cannot contain "
                "periods ('.')"
            )
        if "\x00" in label:
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} found in {labels}: labels cannot contain "
                "NUL bytes"
            )
    joined = ".".join(labels)
    try:
        size = _codec.string_size(joined)
    except UnicodeEncodeError:
        raise InvalidNamespaceError(
            f"namespace {labels} is not valid Unicode (lone surrogate)"
        ) from None
    if size > _core.MAX_NAME_BYTES:
        raise InvalidNamespaceError(
            f"namespace {labels} is {size} bytes joined with '.', over the limit of "
            f"{_core.MAX_NAME_BYTES}"
        )
    return labels


def _namespace_string(labels: tuple[str, ...]) -> str:
    return ".".join(labels)


def _labels_of(namespace: str) -> tuple[str, ...] | None:
    """The namespace tuple of a stored namespace string; ``None`` for one that no LangGraph
    namespace maps to (an empty label: written by other means than this store)."""
    labels = tuple(namespace.split("."))
    if "" in labels or "\x00" in namespace:
        return None
    return labels


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be 0 or more, not {value}")
    return value


def _check_listing(op: ListNamespacesOp) -> None:
    for condition in op.match_conditions or ():
        if not isinstance(condition, MatchCondition):
            raise TypeError(
                f"match conditions must be MatchCondition, not {type(condition).__name__}"
            )
        if condition.match_type not in ("prefix", "suffix"):
            raise ValueError(f"Unsupported match type: {condition.match_type}")
        _check_labels(tuple(label for label in condition.path))
    _check_count(op.limit, "limit")
    _check_count(op.offset, "offset")
    if op.max_depth is not None:
        _check_count(op.max_depth, "max_depth")


def _matches(condition: MatchCondition, labels: tuple[str, ...]) -> bool:
    """LangGraph's namespace match: ``*`` stands for any one label."""
    path = tuple(condition.path)
    if len(labels) < len(path):
        return False
    # only as many labels as the path has are compared: the rest may be anything
    if condition.match_type == "prefix":
        compared = zip(labels, path, strict=False)
    else:
        compared = zip(reversed(labels), reversed(path), strict=False)
    return all(wanted == "*" or label == wanted for label, wanted in compared)


def _listing(op: ListNamespacesOp, namespaces: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    if op.limit == 0:
        return []
    conditions = op.match_conditions or ()
    matching = [ns for ns in namespaces if all(_matches(c, ns) for c in conditions)]
    if op.max_depth is not None:
        depth = op.max_depth
        matching = sorted({ns[:depth] for ns in matching})
    else:
        matching = sorted(matching)
    return matching[op.offset : op.offset + op.limit]


def _ttl_of(minutes: object) -> timedelta | None:
    """A LangGraph TTL (minutes) as the store's ttl."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise TypeError(f"ttl must be a number of minutes or None, not {type(minutes).__name__}")
    if not math.isfinite(minutes):
        raise ValueError(f"ttl must be a finite number of minutes, not {minutes}")
    return _core.check_ttl(minutes * 60)


def _expires_by_ttl(found: FoundItem) -> bool:
    """Whether a read item has a TTL of its own that a read restarts."""
    length = found.item.metadata.get(TTL_FIELD)
    return (
        found.item.expiresAt is not None
        and isinstance(length, (int, float))
        and not isinstance(length, bool)
        and length > 0
    )


def _item(found: FoundItem) -> Item:
    item = found.item
    return Item(
        value=item.value,
        key=item.key,
        namespace=tuple(found.namespace.split(".")),
        created_at=item.createdAt,
        updated_at=item.updatedAt,
    )


def _search_item(found: FoundItem) -> SearchItem:
    item = found.item
    return SearchItem(
        namespace=tuple(found.namespace.split(".")),
        key=item.key,
        value=item.value,
        created_at=item.createdAt,
        updated_at=item.updatedAt,
    )


def _check_ttl_config(config: object) -> TTLConfig | None:
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TypeError(f"ttl must be a TTLConfig (a dict) or None, not {type(config).__name__}")
    unknown = set(config) - _TTL_CONFIG_KEYS
    if unknown:
        raise ValueError(f"ttl has unknown settings: {', '.join(sorted(map(str, unknown)))}")
    refresh = config.get("refresh_on_read", True)
    if not isinstance(refresh, bool):
        raise TypeError(f"refresh_on_read must be a bool, not {type(refresh).__name__}")
    _ttl_of(config.get("default_ttl"))
    return TTLConfig(**config)  # type: ignore[typeddict-item]
