"""``DataStoreKV``, the LangChain store: LangChain's own standard store tests over every kind
of proxy, the commands each method sends, and the edges of keys and values."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from langchain_core.stores import BaseStore, InMemoryStore
from langchain_tests.integration_tests import BaseStoreAsyncTests, BaseStoreSyncTests

import agent_datastore
from agent_datastore import (
    AsyncRemoteDataStoreProxy,
    RemoteDataStoreProxy,
    issue_token,
)
from agent_datastore._core import KEY_PAGE_SIZE
from agent_datastore.integrations.langchain import DataStoreKV

from .conftest import real_async_store
from .helpers import MONGODB_URI, REAL_SERVER_SKIP
from .service import SECRET, RemoteStore, ServiceThread
from .test_wire_commands import SCOPE, only_command, without_expiry
from .wire import WireServer, start_wire_server

USER, AGENT, NAMESPACE = "user-1", "agent-a", "langchain"

# JSON values of three shapes; an integer past 64 bits, which the store keeps exact
THREE_VALUES = ({"text": "foo", "n": 1}, ["bar", 2.5, None, True], 2**70)

SYNC_BACKENDS = ["embedded", "remote", "mongodb"]
ASYNC_BACKENDS = ["embedded-async", "remote-async", "mongodb-async"]


def _real_server_collection() -> str:
    if not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    return f"langchain_{uuid.uuid4().hex}"


@contextmanager
def sync_store(request: pytest.FixtureRequest, backend: str) -> Iterator[Any]:
    """A new, empty store whose ``proxy(user, agent, namespace)`` is a synchronous proxy:
    local on the embedded store or a real server, or remote through the store service."""
    if backend == "embedded":
        with agent_datastore.connect("mongomock://") as store:
            yield store
    elif backend == "remote":
        service: ServiceThread = request.getfixturevalue("service")
        with RemoteStore(service, agent_datastore.connect("mongomock://")) as remote:
            yield remote
    else:
        name = _real_server_collection()
        assert MONGODB_URI is not None
        with agent_datastore.connect(
            MONGODB_URI, database="agent_datastore_tests", collection=name
        ) as store:
            try:
                yield store
            finally:
                store.collection.drop()


class AsyncRemoteStore:
    """Async remote proxies through the store service, made and closed on the test's loop."""

    def __init__(self, remote: RemoteStore) -> None:
        self.remote = remote
        self.proxies: list[AsyncRemoteDataStoreProxy] = []

    def proxy(self, user_id: str, agent_name: str, namespace: str) -> AsyncRemoteDataStoreProxy:
        token = self.remote.token(user_id, agent_name)
        proxy = AsyncRemoteDataStoreProxy(self.remote.url, token, namespace)
        self.proxies.append(proxy)
        return proxy


@asynccontextmanager
async def async_store(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[Any]:
    """As ``sync_store``, with asynchronous proxies, on the running loop."""
    if backend == "embedded-async":
        async with agent_datastore.connect_async("mongomock://") as store:
            yield store
    elif backend == "remote-async":
        service: ServiceThread = request.getfixturevalue("service")
        with RemoteStore(service, agent_datastore.connect("mongomock://")) as remote:
            facade = AsyncRemoteStore(remote)
            try:
                yield facade
            finally:
                for proxy in facade.proxies:
                    await proxy.aclose()
    else:
        async with real_async_store("langchain") as store:
            yield store


# ------------------------------------------------------------ LangChain's standard tests


class TestDataStoreKVSync(BaseStoreSyncTests[Any]):
    """LangChain's synchronous store tests over the synchronous proxies."""

    @pytest.fixture(params=SYNC_BACKENDS)
    def kv_store(self, request: pytest.FixtureRequest) -> Iterator[DataStoreKV]:
        with sync_store(request, request.param) as store:
            yield DataStoreKV(store.proxy(USER, AGENT, NAMESPACE))

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return THREE_VALUES


class TestDataStoreKVAsync(BaseStoreAsyncTests[Any]):
    """LangChain's async store tests over every proxy: natively over the async proxies, in
    the loop's executor (LangChain's default) over the synchronous ones."""

    # the suite's coroutine tests run under pytest-asyncio, which is strict here; its one
    # plain test (that no standard test was overridden) then draws a warning that the mark
    # does nothing for it
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [
        pytest.mark.asyncio,
        pytest.mark.filterwarnings(
            "ignore:The test <Function test_no_overrides_DO_NOT_OVERRIDE> is marked with "
            "'@pytest.mark.asyncio' but it is not an async function:pytest.PytestWarning"
        ),
    ]

    @pytest_asyncio.fixture(params=SYNC_BACKENDS + ASYNC_BACKENDS)
    async def kv_store(self, request: pytest.FixtureRequest) -> AsyncIterator[DataStoreKV]:
        if request.param in SYNC_BACKENDS:
            with sync_store(request, request.param) as store:
                yield DataStoreKV(store.proxy(USER, AGENT, NAMESPACE))
        else:
            async with async_store(request, request.param) as store:
                yield DataStoreKV(store.proxy(USER, AGENT, NAMESPACE))

    @pytest.fixture
    def three_values(self) -> tuple[Any, Any, Any]:
        return THREE_VALUES


# ------------------------------------------------------------ keys, values and isolation


@pytest.fixture(params=SYNC_BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    with sync_store(request, request.param) as opened:
        yield opened


@pytest.fixture
def kv(store: Any) -> DataStoreKV:
    return DataStoreKV(store.proxy(USER, AGENT, NAMESPACE))


def test_values_come_back_as_json_reads_them(kv: DataStoreKV) -> None:
    values = {
        "big": 2**100,
        "negative big": -(2**90),
        "int64 edges": [2**63 - 1, -(2**63), 2**63, -(2**63) - 1],
        "operators": {"$set": {"a.b": 1}, "$": [{"$in": ["x"]}], "": {"x.y": "$z"}},
        "tuple": (1, (2, 3)),
        "null": None,
    }
    kv.mset(list(values.items()))
    answer = kv.mget(list(values))
    assert answer == [json.loads(json.dumps(value)) for value in values.values()]
    assert type(answer[0]) is int
    assert answer[4] == [1, [2, 3]]  # JSON has no tuples: unlike InMemoryStore, not the object


def test_mget_answers_in_the_order_asked_with_none_for_what_is_missing(kv: DataStoreKV) -> None:
    kv.mset([("b", 2), ("a", 1)])
    assert kv.mget(["zz", "a", "b", "a", "missing"]) == [None, 1, 2, 1, None]
    assert kv.mget(iter(["b", "a"])) == [2, 1]  # type: ignore[arg-type]  # an iterator, once
    assert kv.mget([]) == []


def test_mset_keeps_the_last_value_of_a_repeated_key_as_in_memory_store_does(
    kv: DataStoreKV,
) -> None:
    pairs = [("k", 1), ("j", 2), ("k", 3)]
    in_memory = InMemoryStore()
    in_memory.mset(pairs)
    kv.mset(pairs)
    assert kv.mget(["k", "j"]) == in_memory.mget(["k", "j"]) == [3, 2]


def test_stored_values_are_copies(kv: DataStoreKV) -> None:
    value = {"list": [1]}
    kv.mset([("k", value)])
    value["list"].append(2)
    (read,) = kv.mget(["k"])
    assert read == {"list": [1]}
    read["list"].append(3)
    assert kv.mget(["k"]) == [{"list": [1]}]


KEYS = ["a", "a.b", "axb", "a*b", "a|b", "a\\b", "(x)", "(x)y", "[y]", "^a", "$", ".", "é", "ée"]


@pytest.mark.parametrize("prefix", ["a.", "a*", "a|", "a\\", "(x", "[", "^", "$", ".", "é", "a"])
def test_a_prefix_is_a_literal_string_whatever_regex_characters_it_holds(
    kv: DataStoreKV, prefix: str
) -> None:
    kv.mset([(key, i) for i, key in enumerate(KEYS)])
    expected = sorted(key for key in KEYS if key.startswith(prefix))
    assert sorted(kv.yield_keys(prefix=prefix)) == expected
    assert expected  # every prefix matches something, so a regex would have matched more


def test_yield_keys_lists_every_key_in_byte_order_and_an_empty_prefix_is_none(
    kv: DataStoreKV,
) -> None:
    kv.mset([(key, i) for i, key in enumerate(KEYS)])
    by_bytes = sorted(KEYS, key=lambda key: key.encode())
    assert list(kv.yield_keys()) == by_bytes
    assert list(kv.yield_keys(prefix="")) == by_bytes
    assert list(kv.yield_keys(prefix="nothing")) == []


def test_stores_of_other_users_agents_and_namespaces_see_nothing_of_each_other(
    store: Any,
) -> None:
    scopes = [
        (USER, AGENT, NAMESPACE),
        ("user-2", AGENT, NAMESPACE),
        (USER, "agent-b", NAMESPACE),
        (USER, AGENT, "other"),
    ]
    stores = [DataStoreKV(store.proxy(*scope)) for scope in scopes]
    for i, kv in enumerate(stores):
        kv.mset([("shared", i), (f"own-{i}", i)])
    for i, kv in enumerate(stores):
        assert kv.mget(["shared", *(f"own-{j}" for j in range(len(stores)))]) == [
            i,
            *(i if j == i else None for j in range(len(stores))),
        ]
        assert list(kv.yield_keys()) == [f"own-{i}", "shared"]
    stores[0].mdelete(["shared", "own-1", "own-2", "own-3"])
    assert stores[0].mget(["shared"]) == [None]
    assert [kv.mget(["shared"]) for kv in stores[1:]] == [[1], [2], [3]]


def test_bytes_are_refused_with_the_proxys_type_error_and_nothing_is_written(
    kv: DataStoreKV,
) -> None:
    with pytest.raises(TypeError, match="key 'b' is not storable JSON"):
        kv.mset([("a", 1), ("b", b"bytes")])
    assert kv.mget(["a", "b"]) == [None, None]
    assert list(kv.yield_keys()) == []


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda kv: kv.mget([""]), ValueError, "key must not be empty"),
        (lambda kv: kv.mset([("", 1)]), ValueError, "key must not be empty"),
        (lambda kv: kv.mdelete([""]), ValueError, "key must not be empty"),
        (lambda kv: kv.mget([1]), TypeError, "key must be a str, not int"),
        (lambda kv: kv.mset([(1, 1)]), TypeError, "key must be a str, not int"),
        (lambda kv: kv.mget("ab"), TypeError, "keys must be a list of str, not str"),
        (lambda kv: kv.mdelete("ab"), TypeError, "keys must be a list of str, not str"),
        (lambda kv: kv.mget(["k" * 1025]), ValueError, "over the limit of 1024"),
        (lambda kv: kv.yield_keys(prefix=1), TypeError, "prefix must be a str or None"),
    ],
    ids=[
        "mget empty",
        "mset empty",
        "mdelete empty",
        "mget int",
        "mset int",
        "mget str",
        "mdelete str",
        "mget long",
        "yield_keys prefix",
    ],
)
def test_bad_keys_raise_the_proxys_errors_at_the_call(
    kv: DataStoreKV, call: Callable[[Any], Any], error: type[Exception], message: str
) -> None:
    kv.mset([("kept", 1)])
    with pytest.raises(error, match=message):
        call(kv)  # yield_keys included: its prefix is checked before the first key
    assert kv.mget(["kept"]) == [1]


def test_a_json_null_reads_as_none_as_in_langchain(kv: DataStoreKV) -> None:
    kv.mset([("null", None)])
    assert kv.mget(["null"]) == [None]
    assert list(kv.yield_keys()) == ["null"]  # but it is there


def test_through_the_service_each_batch_is_one_request(service: ServiceThread) -> None:
    with RemoteStore(service, agent_datastore.connect("mongomock://")) as remote:
        kv = DataStoreKV(remote.proxy(USER, AGENT, NAMESPACE))
        keys = [f"key-{i:03d}" for i in range(100)]
        before = remote.requests
        kv.mset([(key, {"i": i}) for i, key in enumerate(keys)])
        assert kv.mget(keys) == [{"i": i} for i in range(100)]
        kv.mdelete(keys)
        assert remote.requests - before == 3


# ------------------------------------------------------------ async, and the proxy kinds


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
async def test_the_async_methods_on_an_async_proxy_are_native(
    request: pytest.FixtureRequest, backend: str
) -> None:
    loop = asyncio.get_running_loop()
    executor = CountingExecutor()
    loop.set_default_executor(executor)
    async with async_store(request, backend) as store:
        kv = DataStoreKV(store.proxy(USER, AGENT, NAMESPACE))
        await kv.amset([("b", 2**70), ("a", {"$x": 1})])
        assert await kv.amget(["a", "b", "zz"]) == [{"$x": 1}, 2**70, None]
        assert [key async for key in kv.ayield_keys(prefix="a")] == ["a"]
        await kv.amdelete(["a", "zz"])
        assert [key async for key in kv.ayield_keys()] == ["b"]
    assert executor.submitted == 0  # no thread: every call awaited the proxy


@pytest.mark.asyncio
async def test_the_async_methods_on_a_sync_proxy_run_in_the_loops_executor() -> None:
    loop = asyncio.get_running_loop()
    executor = CountingExecutor()
    loop.set_default_executor(executor)
    with agent_datastore.connect("mongomock://") as store:
        kv = DataStoreKV(store.proxy(USER, AGENT, NAMESPACE))
        await kv.amset([("a", 1)])
        assert await kv.amget(["a"]) == [1]
        assert [key async for key in kv.ayield_keys()] == ["a"]
        await kv.amdelete(["a"])
    assert executor.submitted >= 4


class CountingExecutor(ThreadPoolExecutor):
    """A thread pool (what asyncio takes as a default executor) that counts its tasks."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["embedded-async", "remote-async"])
async def test_the_sync_methods_on_an_async_proxy_say_what_to_call_and_send_nothing(
    request: pytest.FixtureRequest, backend: str
) -> None:
    async with async_store(request, backend) as store:
        proxy = store.proxy(USER, AGENT, NAMESPACE)
        kv = DataStoreKV(proxy)
        name = type(proxy).__name__
        calls: list[tuple[Callable[[], Any], str]] = [
            (lambda: kv.mget(["a"]), "await store.amget(...)"),
            (lambda: kv.mset([("a", 1)]), "await store.amset(...)"),
            (lambda: kv.mdelete(["a"]), "await store.amdelete(...)"),
            (lambda: kv.yield_keys(), "async for key in store.ayield_keys(...)"),
        ]
        for call, instead in calls:
            with pytest.raises(TypeError, match=f"cannot call an {name}") as raised:
                call()
            assert instead in str(raised.value)
        assert await kv.amget(["a"]) == [None]


def test_a_store_takes_only_a_proxy() -> None:
    with agent_datastore.connect("mongomock://") as store:
        for wrong in (store, object(), None, InMemoryStore()):
            with pytest.raises(TypeError, match="proxy must be an AgentDataStoreProxy"):
                DataStoreKV(wrong)  # type: ignore[arg-type]
        proxy = store.proxy(USER, AGENT, NAMESPACE)
        kv = DataStoreKV(proxy)
        assert kv.proxy is proxy
        assert isinstance(kv, BaseStore)
        assert repr(kv) == f"DataStoreKV({proxy!r})"


@pytest.mark.asyncio
async def test_each_proxy_kind_is_taken() -> None:
    token = issue_token(SECRET, USER, AGENT)
    with (
        agent_datastore.connect("mongomock://") as store,
        RemoteDataStoreProxy("http://127.0.0.1:9", token) as remote,
    ):
        local = store.proxy(USER, AGENT)
        assert DataStoreKV(local).proxy is local
        assert DataStoreKV(remote).proxy is remote
    async with (
        agent_datastore.connect_async("mongomock://") as async_store_,
        AsyncRemoteDataStoreProxy("http://127.0.0.1:9", token) as async_remote,
    ):
        async_local = async_store_.proxy(USER, AGENT)
        assert DataStoreKV(async_local).proxy is async_local
        assert DataStoreKV(async_remote).proxy is async_remote


def test_without_langchain_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.setitem(sys.modules, "langchain_core.stores", None)
    monkeypatch.delitem(sys.modules, "agent_datastore.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'agent-datastore\[langchain\]'"):
        importlib.import_module("agent_datastore.integrations.langchain")


def test_importing_the_package_loads_no_integration_and_no_langchain() -> None:
    script = (
        "import sys, agent_datastore\n"
        "print([m for m in sys.modules if m.startswith(('agent_datastore.integrations',"
        " 'langchain'))])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------ over the wire


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def wire_kv(wire: WireServer) -> Iterator[DataStoreKV]:
    """A store over a proxy of namespace ``ns`` on the wire server, index ensured, nothing
    recorded."""
    with wire.connect() as store:
        store.ensure_indexes()
        wire.take()
        yield DataStoreKV(store.proxy("user-1", "agent-a", "ns"))
    wire.take()


KEYS_100 = [f"key-{i:03d}" for i in range(100)]


def test_mget_of_100_keys_is_one_find(wire: WireServer, wire_kv: DataStoreKV) -> None:
    wire.find_batches.append([{"key": "key-050", "value": 50}, {"key": "key-007", "value": 7}])
    answer = wire_kv.mget(KEYS_100)
    assert answer == [{7: 7, 50: 50}.get(i) for i in range(100)]
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict([*SCOPE, ("key", {"$in": KEYS_100})])


def test_mset_of_100_pairs_is_one_update(wire: WireServer, wire_kv: DataStoreKV) -> None:
    wire_kv.mset([(key, {"i": i}) for i, key in enumerate(KEYS_100)])
    command = only_command(wire, "update")
    assert command["ordered"] is False
    assert [statement["q"] for statement in command["updates"]] == [
        dict([*SCOPE, ("key", key)]) for key in KEYS_100
    ]
    assert all(statement["upsert"] is True for statement in command["updates"])


def test_mdelete_of_100_keys_is_one_delete(wire: WireServer, wire_kv: DataStoreKV) -> None:
    wire_kv.mdelete(KEYS_100)
    command = only_command(wire, "delete")
    (statement,) = command["deletes"]
    assert without_expiry(statement["q"]) == dict([*SCOPE, ("key", {"$in": KEYS_100})])
    assert statement["limit"] == 0


def test_yield_keys_streams_a_page_at_a_time(wire: WireServer, wire_kv: DataStoreKV) -> None:
    first_page = [{"key": f"k{i:05d}"} for i in range(KEY_PAGE_SIZE)]
    wire.find_batches.extend([first_page, [{"key": "z"}]])
    keys = wire_kv.yield_keys(prefix="k")
    assert wire.take() == []  # nothing is read before the first key is asked for
    assert next(keys) == "k00000"
    (first,) = wire.take()
    assert first["limit"] == KEY_PAGE_SIZE
    rest = list(keys)
    assert len(rest) == KEY_PAGE_SIZE
    (second,) = wire.take()  # the next page starts after the last key seen
    assert second["filter"]["key"]["$gt"] == f"k{KEY_PAGE_SIZE - 1:05d}"


def test_the_async_methods_send_the_same_single_commands(wire: WireServer) -> None:
    async def go() -> list[str]:
        store = agent_datastore.connect_async(wire.uri, serverSelectionTimeoutMS=10_000)
        async with store:
            await store.ensure_indexes()
            wire.take()
            kv = DataStoreKV(store.proxy("user-1", "agent-a", "ns"))
            await kv.amset([(key, 1) for key in KEYS_100])
            await kv.amget(KEYS_100)
            await kv.amdelete(KEYS_100)
            return wire.names()

    assert asyncio.run(go()) == ["update", "find", "delete"]
    commands = wire.take()
    assert len(commands[0]["updates"]) == 100
