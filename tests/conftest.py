"""Fixtures of the test suite."""

from __future__ import annotations

import gc
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import agent_datastore
from agent_datastore import AgentDataStoreProxy, AsyncDataStore, DataStore

from .helpers import MONGODB_URI, REAL_SERVER_SKIP, MovableClock
from .service import ServiceThread, remote_store
from .twins import SyncOverAsyncStore

# CI runs hypothesis derandomized, so a run is reproducible; locally it explores.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


class _AsyncClientCloses:
    """Whether a test closed a pymongo ``AsyncMongoClient``. pymongo's async client leaves
    unclosed the socket of a connection attempt that ``close()`` cancels
    (``pool_shared._async_create_connection`` closes it only on ``OSError`` and
    ``TimeoutError``, not on cancellation), so a test that closes one may leave such a socket
    to the garbage collector, whose ResourceWarning would then fail whichever later test, or
    the end of the run, it happens in. After such a test, and only then, it is collected."""

    happened = False

    @classmethod
    def watch(cls) -> None:
        from pymongo import AsyncMongoClient

        close = AsyncMongoClient.close

        async def noting_close(self: Any) -> None:
            cls.happened = True
            await close(self)

        AsyncMongoClient.close = noting_close  # type: ignore[method-assign]
        AsyncMongoClient.aclose = noting_close  # type: ignore[method-assign]  # an alias of close


_AsyncClientCloses.watch()


@pytest.fixture(autouse=True)
def _collect_sockets_async_clients_leave() -> Iterator[None]:
    _AsyncClientCloses.happened = False
    yield
    if _AsyncClientCloses.happened:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture
def clock() -> MovableClock:
    """The clock of the ``store`` fixture: real time, until a test moves it forward."""
    return MovableClock()


def _real_store(clock: MovableClock, asynchronous: bool) -> Iterator[Any]:
    if not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    name = f"contract_{uuid.uuid4().hex}"
    with agent_datastore.connect(
        MONGODB_URI, database="agent_datastore_tests", collection=name, clock=clock
    ) as store:
        try:
            if not asynchronous:
                yield store
                return
            twin = agent_datastore.connect_async(
                MONGODB_URI, database="agent_datastore_tests", collection=name, clock=clock
            )
            with SyncOverAsyncStore(twin, store.collection) as facade:
                yield facade
        finally:
            store.collection.drop()


@asynccontextmanager
async def real_async_store(prefix: str) -> AsyncIterator[AsyncDataStore]:
    """A new async store on a collection of its own (``prefix`` and a random name) at
    MONGODB_URI, dropped afterwards; skips the test without MONGODB_URI."""
    if not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    name = f"{prefix}_{uuid.uuid4().hex}"
    async with agent_datastore.connect_async(
        MONGODB_URI, database="agent_datastore_tests", collection=name
    ) as store:
        try:
            yield store
        finally:
            await store.collection.drop()


@pytest.fixture(scope="session")
def service() -> Iterator[ServiceThread]:
    """The store service on 127.0.0.1, for the whole session (see ``tests/service.py``)."""
    running = ServiceThread()
    yield running
    running.stop()


@pytest.fixture(
    params=["embedded", "embedded-async", "remote", "remote-async", "mongodb", "mongodb-async"]
)
def store(request: pytest.FixtureRequest, clock: MovableClock) -> Iterator[Any]:
    """A new, empty store: the embedded one, and a real server when MONGODB_URI is set; each
    through the synchronous store and through the asynchronous twin (behind the synchronous
    interface of ``tests/twins.py``), so that every contract test runs against both. The
    ``remote`` backends are the remote proxies, through the store service on 127.0.0.1, in
    front of an embedded store (``tests/service.py``)."""
    if request.param.startswith("remote"):
        service = request.getfixturevalue("service")
        yield from remote_store(service, clock, asynchronous=request.param == "remote-async")
    else:
        yield from local_store(request.param, clock)


def local_store(backend: str, clock: MovableClock) -> Iterator[Any]:
    """A new, empty store of one of ``store``'s local backends ("embedded", "embedded-async",
    "mongodb", "mongodb-async")."""
    if backend == "embedded":
        with agent_datastore.connect("mongomock://", clock=clock) as embedded:
            yield embedded
    elif backend == "embedded-async":
        twin = agent_datastore.connect_async("mongomock://", clock=clock)
        with SyncOverAsyncStore(twin, twin.collection) as facade:
            yield facade
    else:
        yield from _real_store(clock, backend == "mongodb-async")


@pytest.fixture
def data_store(store: DataStore) -> AgentDataStoreProxy:
    """What a sandbox hands an agent run: user ``user-1``, agent ``agent-a``, namespace
    ``default``."""
    return store.proxy("user-1", "agent-a")


@pytest.fixture
def embedded_data_store() -> Iterator[AgentDataStoreProxy]:
    with agent_datastore.connect("mongomock://") as embedded:
        yield embedded.proxy("user-1", "agent-a")
