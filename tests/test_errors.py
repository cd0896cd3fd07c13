"""The exception hierarchy, the Starlette integration, and the translation of every pymongo
error at the one boundary."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import dns.resolver
import pytest
from bson.errors import InvalidBSON, InvalidDocument
from pymongo import UpdateOne
from pymongo import errors as pe

import agent_datastore
from agent_datastore import (
    AgentDataStoreProxy,
    AsyncDataStore,
    DataStore,
    DataStoreError,
    DataStoreUnavailable,
    HTTPException,
    _core,
)
from agent_datastore._exceptions import translate_driver_errors

from .twins import SyncOverAsyncStore


def test_hierarchy_and_status_codes() -> None:
    assert issubclass(DataStoreUnavailable, HTTPException)
    assert issubclass(DataStoreError, HTTPException)
    unavailable = DataStoreUnavailable("no primary")
    assert (unavailable.status_code, unavailable.detail) == (503, "no primary")
    assert str(unavailable) == "503: no primary"
    assert repr(unavailable) == "DataStoreUnavailable(status_code=503, detail='no primary')"
    assert DataStoreError().status_code == 500
    assert DataStoreError().detail == "Internal Server Error"
    assert HTTPException(404).detail == "Not Found"
    assert HTTPException(418, "teapot", headers={"X": "1"}).headers == {"X": "1"}


def test_http_exception_is_starlettes_when_starlette_is_installed() -> None:
    from starlette.exceptions import HTTPException as StarletteHTTPException

    assert issubclass(HTTPException, StarletteHTTPException)
    assert isinstance(DataStoreUnavailable("down"), StarletteHTTPException)


def test_a_starlette_app_answers_503_by_itself() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def endpoint(request: Request) -> JSONResponse:
        raise DataStoreUnavailable("database unavailable (ServerSelectionTimeoutError)")

    app = Starlette(routes=[Route("/run", endpoint)])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/run",
        "raw_path": b"/run",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start["status"] == 503
    assert b"database unavailable" in body


def test_the_package_works_without_starlette() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["starlette"] = None  # makes "import starlette" fail
        import agent_datastore as ads
        assert ads.HTTPException.__mro__[1] is Exception, ads.HTTPException.__mro__
        exc = ads.DataStoreUnavailable("down")
        assert (exc.status_code, exc.detail, exc.headers) == (503, "down", None)
        assert str(exc) == "503: down"
        assert isinstance(exc, ads.HTTPException)
        with ads.connect("mongomock://") as store:
            store.proxy("u", "a").set("k", 1)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def _dns_configuration_error() -> pe.ConfigurationError:
    try:
        try:
            raise dns.resolver.NXDOMAIN()
        except dns.resolver.NXDOMAIN as dns_error:
            raise pe.ConfigurationError("The DNS query name does not exist") from dns_error
    except pe.ConfigurationError as exc:
        return exc


def _dns_configuration_error_from_none() -> pe.ConfigurationError:
    """As pymongo before 4.16 raises it: ``from None``, the DNS error left as the context."""
    try:
        try:
            raise dns.resolver.NXDOMAIN()
        except dns.resolver.NXDOMAIN as dns_error:
            raise pe.ConfigurationError(str(dns_error)) from None
    except pe.ConfigurationError as exc:
        return exc


def _bulk(write_errors: list[dict[str, Any]], concern: list[dict[str, Any]] | None = None) -> Any:
    return pe.BulkWriteError(
        {"writeErrors": write_errors, "writeConcernErrors": concern or [], "nInserted": 0}
    )


# Every error class pymongo.errors defines, with an instance and what the caller sees.
MAPPING: list[tuple[type[Exception], Callable[[], Exception], type[Exception]]] = [
    (pe.ConnectionFailure, lambda: pe.ConnectionFailure("refused"), DataStoreUnavailable),
    (pe.AutoReconnect, lambda: pe.AutoReconnect("connection reset"), DataStoreUnavailable),
    (pe.NetworkTimeout, lambda: pe.NetworkTimeout("timed out"), DataStoreUnavailable),
    (pe.NotPrimaryError, lambda: pe.NotPrimaryError("not primary"), DataStoreUnavailable),
    (
        pe.ServerSelectionTimeoutError,
        lambda: pe.ServerSelectionTimeoutError("no servers"),
        DataStoreUnavailable,
    ),
    (pe.WaitQueueTimeoutError, lambda: pe.WaitQueueTimeoutError("pool full"), DataStoreUnavailable),
    (
        pe.ExecutionTimeout,
        lambda: pe.ExecutionTimeout("operation exceeded time limit", 50),
        DataStoreUnavailable,
    ),
    (
        pe.WTimeoutError,
        lambda: pe.WTimeoutError("waiting for replication", 64),
        DataStoreUnavailable,
    ),
    (
        pe.WriteConcernError,
        lambda: pe.WriteConcernError("write concern failed", 100),
        DataStoreUnavailable,
    ),
    (pe.ConfigurationError, _dns_configuration_error, DataStoreUnavailable),
    (pe.ConfigurationError, _dns_configuration_error_from_none, DataStoreUnavailable),
    (pe.ConfigurationError, lambda: pe.ConfigurationError("bad option"), DataStoreError),
    (pe.DocumentTooLarge, lambda: pe.DocumentTooLarge("too large"), ValueError),
    (InvalidDocument, lambda: InvalidDocument("cannot encode object"), ValueError),
    (InvalidBSON, lambda: InvalidBSON("year 0 is out of range"), DataStoreError),
    (pe.OperationFailure, lambda: pe.OperationFailure("unauthorized", 13), DataStoreError),
    (pe.OperationFailure, lambda: pe.OperationFailure("host unreachable", 6), DataStoreUnavailable),
    (pe.OperationFailure, lambda: pe.OperationFailure("time limit", 262), DataStoreUnavailable),
    (pe.OperationFailure, lambda: pe.OperationFailure("stepped down", 189), DataStoreUnavailable),
    (
        pe.OperationFailure,
        lambda: pe.OperationFailure("x", 999, {"errorLabels": ["RetryableWriteError"]}),
        DataStoreUnavailable,
    ),
    (pe.OperationFailure, lambda: pe.OperationFailure("BSONObjectTooLarge", 10334), ValueError),
    (pe.WriteError, lambda: pe.WriteError("resulting document too large", 17419), ValueError),
    (pe.WriteError, lambda: pe.WriteError("path not viable", 28), DataStoreError),
    (pe.DuplicateKeyError, lambda: pe.DuplicateKeyError("E11000", 11000), DataStoreError),
    (pe.CursorNotFound, lambda: pe.CursorNotFound("cursor not found", 43), DataStoreError),
    (pe.BulkWriteError, lambda: _bulk([{"index": 0, "code": 17419}]), ValueError),
    (pe.BulkWriteError, lambda: _bulk([], [{"code": 64}]), DataStoreUnavailable),
    (pe.BulkWriteError, lambda: _bulk([{"index": 0, "code": 2, "errmsg": "x"}]), DataStoreError),
    (pe.InvalidOperation, lambda: pe.InvalidOperation("after close"), DataStoreError),
    (pe.ProtocolError, lambda: pe.ProtocolError("bad message"), DataStoreError),
    (pe.InvalidName, lambda: pe.InvalidName("bad name"), DataStoreError),
    (pe.InvalidURI, lambda: pe.InvalidURI("bad uri"), DataStoreError),
    (pe.CollectionInvalid, lambda: pe.CollectionInvalid("exists"), DataStoreError),
    (pe.EncryptionError, lambda: pe.EncryptionError(Exception("kms")), DataStoreError),
    (
        pe.EncryptedCollectionError,
        lambda: pe.EncryptedCollectionError(Exception("x"), {}),
        DataStoreError,
    ),
    (
        pe.ClientBulkWriteException,
        lambda: pe.ClientBulkWriteException({"writeErrors": []}, verbose=False),
        DataStoreError,
    ),
    (pe.PyMongoError, lambda: pe.PyMongoError("anything"), DataStoreError),
]


def test_the_mapping_covers_every_pymongo_error_class() -> None:
    defined = {
        cls
        for name, cls in inspect.getmembers(pe, inspect.isclass)
        if issubclass(cls, (pe.PyMongoError, InvalidDocument))
        and cls.__module__.startswith("pymongo")
        and not name.startswith("_")  # private: pymongo's own retry machinery
    }
    covered = {cls for cls, _, _ in MAPPING}
    assert defined - covered == set()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(make, expected, id=f"{cls.__name__}-{index}")
        for index, (cls, make, expected) in enumerate(MAPPING)
    ],
)
def test_each_driver_error_is_translated_with_its_cause(
    make: Callable[[], Exception], expected: type[Exception]
) -> None:
    original = make()
    with pytest.raises(expected) as caught, translate_driver_errors(("the-key",)):
        raise original
    assert caught.value.__cause__ is original
    assert not isinstance(caught.value, pe.PyMongoError)
    if expected is ValueError:
        assert "'the-key'" in str(caught.value)


class FailingCollection:
    """A collection stand-in whose first ``failures`` calls raise the given error (or the
    errors of a list, one per call)."""

    def __init__(self, error: Exception | list[Exception], failures: int = 10**9) -> None:
        self.errors = error if isinstance(error, list) else None
        self.error = error if not isinstance(error, list) else error[0]
        self.failures = len(error) if isinstance(error, list) else failures
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def with_options(self, **_: Any) -> FailingCollection:
        return self

    def _call(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if len(self.calls) <= self.failures:
            raise self.errors[len(self.calls) - 1] if self.errors else self.error
        return _Result()

    def index_information(self) -> dict[str, Any]:
        # the store's indexes are in place: first use is one listing, which never fails here
        return {
            _core.INDEX_NAME: {"key": _core.INDEX_KEYS, "unique": True},
            _core.TTL_INDEX_NAME: {"key": _core.TTL_INDEX_KEYS, "expireAfterSeconds": 0},
        }

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self._call(name, *args)


class _Result:
    deleted_count = 0

    def __iter__(self) -> Any:
        return iter([])

    async def to_list(self, length: int | None = None) -> list[Any]:
        return []


class AsyncFailingCollection:
    """``FailingCollection`` with ``AsyncCollection``'s shape, for the async twin."""

    def __init__(self, collection: FailingCollection) -> None:
        self.sync = collection

    def with_options(self, **_: Any) -> AsyncFailingCollection:
        return self

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync.find(*args, **kwargs)

    async def index_information(self) -> dict[str, Any]:
        return self.sync.index_information()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.sync, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


@pytest.fixture(params=["sync", "async"])
def open_store(request: pytest.FixtureRequest) -> Callable[[FailingCollection], Any]:
    """A store over a ``FailingCollection``: the sync one, or the async twin behind the sync
    interface, so each error test below runs through both runners."""
    opened: list[Any] = []

    def make(collection: FailingCollection) -> Any:
        if request.param == "sync":
            return DataStore(collection)  # type: ignore[arg-type]
        facade = SyncOverAsyncStore(AsyncDataStore(AsyncFailingCollection(collection)), None)
        opened.append(facade)
        return facade

    yield make  # type: ignore[misc]
    for facade in opened:
        facade.close()


EVERY_METHOD: dict[str, Callable[[AgentDataStoreProxy], Any]] = {
    "get": lambda p: p.get("k"),
    "set": lambda p: p.set("k", 1),
    "delete": lambda p: p.delete("k"),
    "list_keys": lambda p: p.list_keys("p"),
    "list_namespaces": lambda p: p.list_namespaces(),
    "clear": lambda p: p.clear(),
    "get_many": lambda p: p.get_many(["a"]),
    "set_many": lambda p: p.set_many({"a": 1}),
    "delete_many": lambda p: p.delete_many(["a", "b"]),
}


@pytest.mark.parametrize("method", list(EVERY_METHOD))
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (pe.NotPrimaryError("not writable primary"), DataStoreUnavailable),
        (pe.NetworkTimeout("timed out"), DataStoreUnavailable),
        (pe.OperationFailure("not authorized", 13), DataStoreError),
    ],
    ids=["NotPrimaryError", "NetworkTimeout", "Unauthorized"],
)
def test_every_method_translates_driver_errors(
    method: str, error: Exception, expected: type[Exception], open_store: Any
) -> None:
    store = open_store(FailingCollection(error))
    with pytest.raises(expected) as caught:
        EVERY_METHOD[method](store.proxy("u", "a"))
    assert caught.value.__cause__ is error


def test_set_retries_once_after_losing_an_insert_race(open_store: Any) -> None:
    collection = FailingCollection(pe.DuplicateKeyError("E11000 duplicate key", 11000), failures=1)
    store = open_store(collection)
    store.proxy("u", "a").set("k", 1)
    assert [name for name, _ in collection.calls] == ["update_one", "update_one"]
    assert collection.calls[0][1] == collection.calls[1][1]


def test_set_gives_up_after_losing_twice(open_store: Any) -> None:
    collection = FailingCollection(pe.DuplicateKeyError("E11000 duplicate key", 11000), failures=2)
    with pytest.raises(DataStoreError):
        open_store(collection).proxy("u", "a").set("k", 1)
    assert len(collection.calls) == 2


def test_set_many_resends_only_the_upserts_that_lost_a_race(open_store: Any) -> None:
    error = _bulk([{"index": 1, "code": 11000, "errmsg": "E11000"}])
    collection = FailingCollection(error, failures=1)
    store = open_store(collection)
    assert store.proxy("u", "a").set_many({"a": 1, "b": 2, "c": 3}) == 3
    (first, _), (second, (retried,)) = collection.calls
    assert (first, second) == ("bulk_write", "bulk_write")
    assert [op._filter["key"] for op in retried] == ["b"]
    assert all(isinstance(op, UpdateOne) for op in retried)


def test_set_many_does_not_resend_after_other_write_errors(open_store: Any) -> None:
    error = _bulk([{"index": 0, "code": 11000}, {"index": 1, "code": 2, "errmsg": "bad"}])
    collection = FailingCollection(error, failures=1)
    with pytest.raises(DataStoreError, match="refused 2 of the batch"):
        open_store(collection).proxy("u", "a").set_many({"a": 1, "b": 2})
    assert len(collection.calls) == 1


def test_an_error_of_the_resent_batch_names_the_resent_item(open_store: Any) -> None:
    race = _bulk([{"index": 2, "code": 11000, "errmsg": "E11000"}])
    too_large = _bulk([{"index": 0, "code": 17419, "errmsg": "too large"}])
    collection = FailingCollection([race, too_large])
    with pytest.raises(ValueError, match=r"item 'c' would exceed"):
        open_store(collection).proxy("u", "a").set_many({"a": 1, "b": 2, "c": 3})


def test_package_errors_are_exported() -> None:
    for name in ("HTTPException", "DataStoreUnavailable", "DataStoreError"):
        assert name in agent_datastore.__all__
