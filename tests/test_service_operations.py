"""The store service as load balancers, orchestrators and Prometheus see it: ``/healthz``,
``/readyz`` (database and indexes, for a ``DataStore`` and an ``AsyncDataStore``) and
``/metrics`` (names, values that follow the requests, the metrics token)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import agent_datastore
from agent_datastore import DataStoreError, DataStoreUnavailable, HTTPException, _protocol
from agent_datastore._health import Readiness
from agent_datastore._metrics import DATABASE_ERROR_KINDS, REFUSAL_REASONS, ServiceMetrics
from agent_datastore._serving import Hold, InflightBudget
from agent_datastore.server import create_app

from .helpers import closed_port
from .service import SECRET, ServiceThread

METRICS_TOKEN = "metrics-token-of-the-scraper-only"
STORE_KINDS = ["sync", "async"]


class Service:
    """One application on the test service, in front of ``backend``, which it closes."""

    def __init__(self, service: ServiceThread, backend: Any, **app_options: Any) -> None:
        self.service = service
        self.backend = backend
        self.app = create_app(backend, SECRET, **app_options)
        self.url = service.mount_app(self.app)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def bearer(self, user_id: str = "user-1", agent_name: str = "agent-a") -> dict[str, str]:
        token = agent_datastore.issue_token(SECRET, user_id, agent_name)
        return {"authorization": f"Bearer {token}"}

    def call(self, operation: str, body: Any, headers: dict[str, str] | None = None) -> int:
        answer = self.http.post(f"/v1/{operation}", json=body, headers=headers or self.bearer())
        return answer.status_code

    def metrics(self, headers: dict[str, str] | None = None) -> dict[tuple[Any, ...], float]:
        """Every sample of ``/metrics``, by name and labels, parsed as Prometheus parses it."""
        answer = self.http.get("/metrics", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        return _samples(answer.text)

    def close(self) -> None:
        self.http.close()
        self.service.unmount(self.url)
        if isinstance(self.backend, agent_datastore.AsyncDataStore):
            # the socket pymongo may leave behind is collected after the test (conftest.py)
            self.service.run(self.backend.aclose())
        else:
            self.backend.close()


def _samples(text: str) -> dict[tuple[Any, ...], float]:
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _key(name: str, **labels: str) -> tuple[Any, ...]:
    return (name, *sorted(labels.items()))


def _open(kind: str, uri: str = "mongomock://", **options: Any) -> Any:
    connect = agent_datastore.connect_async if kind == "async" else agent_datastore.connect
    return connect(uri, **options)


@pytest.fixture
def serving(service: ServiceThread) -> Iterator[Any]:
    """``serving(kind, **options)``: a ``Service`` in front of a new store of that kind."""
    opened: list[Service] = []

    def serve(kind: str, uri: str = "mongomock://", **options: Any) -> Service:
        app_options = {
            name: options.pop(name)
            for name in ("max_body_bytes", "max_batch", "rate_limit", "metrics_token")
            if name in options
        }
        running = Service(service, _open(kind, uri, **options), **app_options)
        opened.append(running)
        return running

    yield serve
    for running in opened:
        running.close()


def _unreachable() -> str:
    return f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=200"


# ----------------------------------------------------------------------------- liveness


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_healthz_answers_without_a_token_or_a_database(serving: Any, kind: str) -> None:
    unreachable = serving(kind, _unreachable())
    answer = unreachable.http.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}
    assert answer.headers["cache-control"] == "no-store"


# ---------------------------------------------------------------------------- readiness


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_readyz_is_200_when_the_indexes_are_in_place(serving: Any, kind: str) -> None:
    ready = serving(kind, ensure_indexes=False)
    indexes = ready.backend.collection
    indexes.create_index(
        [("userId", 1), ("agentName", 1), ("namespace", 1), ("key", 1)],
        name="made_by_an_operator",
        unique=True,
    )
    indexes.create_index([("expiresAt", 1)], expireAfterSeconds=0, sparse=True)
    answer = ready.http.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ready"}


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_readyz_creates_the_indexes_of_a_store_that_ensures_them(serving: Any, kind: str) -> None:
    # a load balancer sends no request to a service before it is ready: the probe itself
    # must be the first use that creates them
    fresh = serving(kind)
    assert fresh.backend.collection.index_information() == {}
    assert fresh.http.get("/readyz").status_code == 200
    names = set(fresh.backend.collection.index_information())
    assert {"userId_1_agentName_1_namespace_1_key_1", "expiresAt_1"} <= names


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_readyz_is_503_when_the_indexes_are_missing(
    serving: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent_datastore.server")
    bare = serving(kind, ensure_indexes=False)  # a fresh collection, and a store that won't
    answer = bare.http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "not ready", "reason": "indexes missing"}
    assert "userId_1_agentName_1_namespace_1_key_1, expiresAt_1" in caplog.text


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_readyz_is_503_when_the_indexes_were_dropped(
    service: ServiceThread, serving: Any, kind: str
) -> None:
    running = serving(kind)
    assert running.http.get("/readyz").status_code == 200  # the indexes are made
    running.backend.collection.drop_index("expiresAt_1")
    # a new application on the same store: the first one keeps its answer for a second
    with httpx.Client(base_url=service.mount_app(create_app(running.backend, SECRET))) as again:
        answer = again.get("/readyz")
        service.unmount(str(again.base_url).rstrip("/"))
    assert answer.status_code == 503
    assert answer.json() == {"status": "not ready", "reason": "indexes missing"}


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_readyz_is_503_when_the_database_is_unreachable(
    serving: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent_datastore.server")
    uri = _unreachable()
    unreachable = serving(kind, uri)
    answer = unreachable.http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "not ready", "reason": "database unavailable"}
    port = uri.split(":")[2].split("/")[0]
    assert "127.0.0.1" not in answer.text
    assert port not in answer.text
    # the details are for the operator's log
    assert "not ready: database unavailable" in caplog.text
    assert f"127.0.0.1:{port}" in caplog.text


class HeldIndexes:
    """An ``AsyncCollection`` stand-in whose ``listIndexes`` waits until released, and counts
    its calls: the database command a readiness probe costs."""

    def __init__(self) -> None:
        self.calls = 0
        self.released = asyncio.Event()

    def with_options(self, **options: Any) -> HeldIndexes:
        return self

    async def index_information(self) -> dict[str, Any]:
        self.calls += 1
        await self.released.wait()
        return {}


def test_a_flood_of_probes_costs_one_command_and_none_waits_past_the_timeout() -> None:
    async def probe() -> None:
        collection = HeldIndexes()
        store = agent_datastore.AsyncDataStore(collection, ensure_indexes=False)
        readiness = Readiness(store, timeout=0.05, cache_seconds=3600)
        reasons = await asyncio.gather(*(readiness.not_ready_reason() for _ in range(50)))
        assert reasons == ["timeout"] * 50  # the command is still held
        assert collection.calls == 1
        assert await readiness.not_ready_reason() == "timeout"  # the same check, waited for
        assert collection.calls == 1
        collection.released.set()
        assert await readiness.not_ready_reason() == "indexes missing"
        for _ in range(50):  # kept: no new command
            assert await readiness.not_ready_reason() == "indexes missing"
        assert collection.calls == 1

    # a probe that hung would fail here, not stall the suite
    asyncio.run(asyncio.wait_for(probe(), 30))


def test_readiness_checks_again_once_its_answer_is_stale() -> None:
    async def probe() -> None:
        collection = HeldIndexes()
        collection.released.set()
        store = agent_datastore.AsyncDataStore(collection, ensure_indexes=False)
        readiness = Readiness(store, cache_seconds=0)
        for _ in range(3):
            assert await readiness.not_ready_reason() == "indexes missing"
        assert collection.calls == 3

    asyncio.run(probe())


# ------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_metrics_follow_the_requests(serving: Any, kind: str) -> None:
    limited = serving(kind, max_body_bytes=2_000, max_batch=3, rate_limit=(8, 60))
    before = limited.metrics()
    assert limited.call("set", {"key": "k", "value": 1}) == 200
    assert limited.call("get", {"key": "k"}) == 200
    assert limited.call("set", {"key": "k", "value": 2, "if_version": 7}) == 409
    assert limited.call("get", {"key": "k"}, headers={"authorization": "Bearer forged"}) == 401
    assert limited.call("get", {"key": "k", "user_id": "someone-else"}) == 400
    assert limited.call("set", {"key": "k", "value": "x" * 3_000}) == 413
    assert limited.call("get_many", {"keys": ["a", "b", "c", "d"]}) == 413
    assert limited.call("list_keys", {"limit": 1_001}) == 413
    assert limited.http.get("/no/such/path").status_code == 404
    assert limited.http.get("/v1/get").status_code == 405
    rate_limited = limited.bearer("user-2", "agent-b")
    statuses = [limited.call("get", {"key": "k"}, headers=rate_limited) for _ in range(9)]
    assert statuses == [200] * 8 + [429]
    after = limited.metrics()

    def grew(name: str, **labels: str) -> float:
        return after[_key(name, **labels)] - before.get(_key(name, **labels), 0.0)

    requests = "agent_datastore_requests_total"
    assert grew(requests, operation="set", status="200") == 1
    assert grew(requests, operation="get", status="200") == 9
    assert grew(requests, operation="set", status="409") == 1
    assert grew(requests, operation="get", status="401") == 1
    assert grew(requests, operation="get", status="400") == 1
    assert grew(requests, operation="set", status="413") == 1
    assert grew(requests, operation="get", status="429") == 1
    assert grew(requests, operation="unknown", status="404") == 1
    assert grew(requests, operation="unknown", status="405") == 1
    assert grew(requests, operation="metrics", status="200") == 1  # the scrape before
    assert grew("agent_datastore_request_duration_seconds_count", operation="get") == 12
    assert grew("agent_datastore_request_duration_seconds_count", operation="set") == 3
    assert grew("agent_datastore_request_duration_seconds_sum", operation="get") > 0
    assert grew("agent_datastore_rate_limited_total") == 1
    refused = "agent_datastore_refused_total"
    assert grew(refused, reason="token") == 1
    assert grew(refused, reason="bad_request") == 1
    assert grew(refused, reason="body_too_large") == 1
    assert grew(refused, reason="batch_too_large") == 1
    assert grew(refused, reason="listing_too_large") == 1
    assert grew(refused, reason="request_too_large") == 0
    assert grew(refused, reason="busy") == 0
    for kind_of_error in DATABASE_ERROR_KINDS:
        assert grew("agent_datastore_database_errors_total", kind=kind_of_error) == 0
    assert after[_key("agent_datastore_in_flight_requests")] == 1  # the scrape itself
    assert after[_key("agent_datastore_in_flight_request_bytes")] == 0
    assert not any("/no/such/path" in str(series) for series in after)  # no label by path


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_an_unreachable_database_is_counted(serving: Any, kind: str) -> None:
    unreachable = serving(kind, _unreachable())
    assert unreachable.call("get", {"key": "k"}) == 503
    assert unreachable.http.get("/readyz").status_code == 503
    samples = unreachable.metrics()
    assert samples[_key("agent_datastore_database_errors_total", kind="unavailable")] == 1
    assert samples[_key("agent_datastore_requests_total", operation="get", status="503")] == 1
    assert samples[_key("agent_datastore_requests_total", operation="readyz", status="503")] == 1


@pytest.mark.parametrize(
    ("status", "error", "series"),
    [
        (503, DataStoreUnavailable(), ("agent_datastore_database_errors", "kind", "unavailable")),
        (500, DataStoreError(), ("agent_datastore_database_errors", "kind", "error")),
        (500, RuntimeError("a bug"), ("agent_datastore_database_errors", "kind", "unexpected")),
        (503, HTTPException(503, "too busy"), ("agent_datastore_refused", "reason", "busy")),
        (401, agent_datastore.TokenRejected(), ("agent_datastore_refused", "reason", "token")),
        (400, TypeError("key"), ("agent_datastore_refused", "reason", "bad_request")),
    ],
)
def test_each_failure_is_counted_under_its_kind(
    status: int, error: Exception, series: tuple[str, str, str]
) -> None:
    metrics = ServiceMetrics(["get"])
    metrics.count_failure(status, error)
    samples = _samples(metrics.exposition()[0].decode())
    name, label, value = series
    counted = {
        key: count
        for key, count in samples.items()
        if key[0] in ("agent_datastore_refused_total", "agent_datastore_database_errors_total")
        and count
    }
    assert counted == {_key(f"{name}_total", **{label: value}): 1}


@pytest.mark.parametrize(
    ("budget_used", "wanted", "reason"),
    [(0, 11, "request_too_large"), (10, 5, "busy")],
)
def test_the_in_flight_budget_refusals_are_counted_under_their_reasons(
    monkeypatch: pytest.MonkeyPatch, budget_used: int, wanted: int, reason: str
) -> None:
    monkeypatch.setattr("agent_datastore._serving.BUSY_WAIT_SECONDS", 0)
    budget = InflightBudget(10)
    Hold(budget).take_now(budget_used)  # another request's, with nothing else of its tenant
    with pytest.raises(HTTPException) as refused:
        asyncio.run(Hold(budget).take(wanted))  # the service's own exception, as it raises it
    metrics = ServiceMetrics(["get"])
    metrics.count_failure(_protocol.encode_error(refused.value)[0], refused.value)
    samples = _samples(metrics.exposition()[0].decode())
    counted = {
        key: count
        for key, count in samples.items()
        if key[0].startswith("agent_datastore") and key[0].endswith("_total") and count
    }
    assert counted == {_key("agent_datastore_refused_total", reason=reason): 1}


def test_every_reason_and_kind_is_a_series_from_the_start() -> None:
    samples = _samples(ServiceMetrics(["get"]).exposition()[0].decode())
    for reason in REFUSAL_REASONS:
        assert samples[_key("agent_datastore_refused_total", reason=reason)] == 0
    for kind in DATABASE_ERROR_KINDS:
        assert samples[_key("agent_datastore_database_errors_total", kind=kind)] == 0
    assert samples[_key("agent_datastore_rate_limited_total")] == 0


def test_bytes_in_flight_come_from_the_given_function() -> None:
    metrics = ServiceMetrics(["get"])
    held = [0.0]
    metrics.track_inflight_bytes(lambda: held[0])
    held[0] = 4096
    samples = _samples(metrics.exposition()[0].decode())
    assert samples[_key("agent_datastore_in_flight_request_bytes")] == 4096


def test_bytes_in_flight_follow_the_in_flight_budget(serving: Any) -> None:
    running = serving("sync")
    hold = Hold(running.app.state.inflight_budget)
    hold.take_now(4096)  # as a request holding a body would
    try:
        held = running.metrics()[_key("agent_datastore_in_flight_request_bytes")]
    finally:
        hold.release()
    assert held == 4096
    assert running.metrics()[_key("agent_datastore_in_flight_request_bytes")] == 0


def test_each_application_counts_only_its_own_requests(serving: Any) -> None:
    first, second = serving("sync"), serving("sync")
    assert first.call("get", {"key": "k"}) == 200
    key = _key("agent_datastore_requests_total", operation="get", status="200")
    assert first.metrics()[key] == 1
    assert key not in second.metrics()


def test_metrics_speak_openmetrics_when_asked(serving: Any) -> None:
    running = serving("sync")
    answer = running.http.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


# ------------------------------------------------------------------------- metrics token


def test_a_metrics_token_keeps_metrics_to_its_holders(serving: Any) -> None:
    guarded = serving("sync", metrics_token=METRICS_TOKEN)
    store_token = guarded.bearer()["authorization"]
    for authorization in [
        None,
        "",
        f"Bearer {METRICS_TOKEN[:-1]}",
        f"Bearer {METRICS_TOKEN}x",
        f"Basic {METRICS_TOKEN}",
        store_token,  # a store token is not the metrics token
    ]:
        headers = {} if authorization is None else {"authorization": authorization}
        answer = guarded.http.get("/metrics", headers=headers)
        assert answer.status_code == 401, authorization
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "agent_datastore" not in answer.text
    samples = guarded.metrics({"authorization": f"Bearer {METRICS_TOKEN}"})
    assert samples[_key("agent_datastore_requests_total", operation="metrics", status="401")] == 6
    # the probes stay open: a load balancer holds no token
    assert guarded.http.get("/healthz").status_code == 200
    assert guarded.http.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("", ValueError),
        ("too short", ValueError),
        ("with a space" * 2, ValueError),
        ("nön-ascii-token-value", ValueError),
        (b"x" * 32, TypeError),
    ],
)
def test_a_metrics_token_must_be_hard_to_guess_and_fit_a_header(
    token: Any, error: type[Exception]
) -> None:
    with agent_datastore.connect("mongomock://") as store, pytest.raises(error):
        create_app(store, SECRET, metrics_token=token)


@pytest.mark.parametrize("from_environment", [False, True])
def test_serve_passes_its_metrics_token(
    monkeypatch: pytest.MonkeyPatch, from_environment: bool
) -> None:
    from agent_datastore import cli

    received: dict[str, Any] = {}
    monkeypatch.setattr(
        "agent_datastore.server.serve", lambda uri, secret, **options: received.update(options)
    )
    monkeypatch.setenv("AGENT_DATASTORE_SECRET", SECRET)
    arguments = ["serve", "--embedded"]
    if from_environment:
        monkeypatch.setenv("AGENT_DATASTORE_METRICS_TOKEN", METRICS_TOKEN)
    else:
        monkeypatch.delenv("AGENT_DATASTORE_METRICS_TOKEN", raising=False)
        arguments += ["--metrics-token", METRICS_TOKEN]
    assert cli.main(arguments) == 0
    assert received["metrics_token"] == METRICS_TOKEN
