"""The store service's Prometheus metrics, served at ``/metrics``.

Each application has a registry of its own, not prometheus-client's global one, so that
several applications in one process (mounted side by side, or made one after another by
tests) each count only their own requests. Only the server imports this module: the package
itself never loads prometheus-client.

Every label takes its values from a fixed set (the operations, the statuses the service
answers, the reasons and kinds below), never from a path or a body, so a client cannot make
the number of series grow. A request costs one counter increment and one histogram
observation, with their label children looked up once and kept.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._exceptions import DataStoreError, DataStoreUnavailable

__all__ = [
    "DATABASE_ERROR_KINDS",
    "REFUSAL_REASONS",
    "UNKNOWN_OPERATION",
    "ServiceMetrics",
    "check_metrics_token",
]

Handler = Callable[[Request], Awaitable[Response]]

# Why the service refused a request before or instead of running it (a 429 is counted apart).
REFUSAL_REASONS = (
    "bad_request",  # 400: not JSON, a field missing, unknown or of the wrong type
    "token",  # 401 or 403: no token, or one that is forged, tampered with or expired
    "body_too_large",  # 413: the body is over max_body_bytes
    "batch_too_large",  # 413: a get_many, set_many or delete_many over max_batch
    "listing_too_large",  # 413: a listing page over the per-request cap
    "request_too_large",  # 413: alone, it would hold more than the whole in-flight budget
    "busy",  # 503 from the service itself (its in-flight budget is full), not its database
)
# How the database failed a request that reached it.
DATABASE_ERROR_KINDS = (
    "unavailable",  # 503: the database did not answer (DataStoreUnavailable)
    "error",  # 500: the database refused the command (DataStoreError)
    "unexpected",  # 500 from any other exception: a bug, whose traceback is in the log
)
# The operation label of a request no route takes (an unknown path, or a wrong method).
UNKNOWN_OPERATION = "unknown"

# Store calls take about a millisecond on a near server and seconds when it struggles.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_MIN_TOKEN_LENGTH = 16


def check_metrics_token(token: object) -> bytes | None:
    """The metrics token as the bytes to compare a request's bearer with, ``None`` for none;
    raises for a token too short to keep a scanner out, or that no header could carry."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"metrics_token must be a string, not {type(token).__name__}")
    if len(token) < _MIN_TOKEN_LENGTH:
        raise ValueError(f"metrics_token must be at least {_MIN_TOKEN_LENGTH} characters long")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ValueError("metrics_token must be printable ASCII without spaces")
    return token.encode("ascii")


def _bearer(request: Request) -> bytes:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return b""
    return credentials.strip().encode("latin-1")


class ServiceMetrics:
    """The metrics of one application, in ``registry``.

    ``instrument`` wraps the handler of an operation (or of any route: the label is its
    name) to time it and count its answers by status; ``count_failure`` says why a request
    failed, from its status and exception; ``endpoint`` serves them all.
    """

    def __init__(self, operations: Iterable[str]) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        # the collectors of the global registry, in this one: memory, CPU, files, GC
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._requests = Counter(
            "agent_datastore_requests",
            "Requests answered, by operation and HTTP status.",
            ["operation", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "agent_datastore_request_duration_seconds",
            "Time from the start of a request's handling to its answer, by operation.",
            ["operation"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self._rate_limited = Counter(
            "agent_datastore_rate_limited",
            "Requests answered 429: over their token's rate limit.",
            registry=registry,
        )
        refused = Counter(
            "agent_datastore_refused",
            "Requests refused by the service (a 429 is counted in rate_limited), by reason.",
            ["reason"],
            registry=registry,
        )
        database_errors = Counter(
            "agent_datastore_database_errors",
            "Requests answered 500 or 503 because of the database (or a bug), by kind.",
            ["kind"],
            registry=registry,
        )
        self._in_flight = Gauge(
            "agent_datastore_in_flight_requests",
            "Requests being handled now.",
            registry=registry,
        )
        self._in_flight_bytes = Gauge(
            "agent_datastore_in_flight_request_bytes",
            "Bytes that requests in flight hold now: bodies, their parsing, answers.",
            registry=registry,
        )
        # every series exists from the start at 0, so that rate() sees the first one
        self._refused = {reason: refused.labels(reason) for reason in REFUSAL_REASONS}
        self._database_errors = {
            kind: database_errors.labels(kind) for kind in DATABASE_ERROR_KINDS
        }
        self._operations = frozenset(operations)
        self._answers: dict[tuple[str, int], Counter] = {}

    def _count_answer(self, operation: str, status: int) -> None:
        key = (operation, status)
        answers = self._answers.get(key)
        if answers is None:  # the first answer of this operation with this status
            answers = self._answers[key] = self._requests.labels(operation, str(status))
        answers.inc()

    def instrument(self, operation: str, handle: Handler) -> Handler:
        """``handle``, timed, counted by status and in the in-flight gauge."""
        if operation not in self._operations:
            raise ValueError(f"no metrics for the operation {operation!r}")
        duration = self._duration.labels(operation)
        in_flight = self._in_flight

        async def instrumented(request: Request) -> Response:
            in_flight.inc()
            started = time.perf_counter()
            try:
                response = await handle(request)
            finally:
                in_flight.dec()
            duration.observe(time.perf_counter() - started)
            self._count_answer(operation, response.status_code)
            return response

        return instrumented

    def count_failure(self, status: int, exc: BaseException) -> None:
        """Count a request answered ``status`` because of ``exc`` under its reason or kind.
        A 409 (a version conflict) is an answer, not a failure: it counts only by status."""
        if status == 429:
            self._rate_limited.inc()
        elif status == 400:
            self._refused["bad_request"].inc()
        elif status in (401, 403):
            self._refused["token"].inc()
        elif status == 413:
            self._refused[_too_large_reason(exc)].inc()
        elif isinstance(exc, DataStoreUnavailable):
            self._database_errors["unavailable"].inc()
        elif isinstance(exc, DataStoreError):
            self._database_errors["error"].inc()
        elif status == 503:  # the service's own 503, not the database's: it is too busy
            self._refused["busy"].inc()
        elif status >= 500:
            self._database_errors["unexpected"].inc()

    def count_unrouted(self, status: int) -> None:
        """Count a request that no route takes, under one label whatever its path."""
        self._count_answer(UNKNOWN_OPERATION, status)

    def track_inflight_bytes(self, used: Callable[[], float]) -> None:
        """Report ``used()``, the bytes requests in flight hold, at each scrape."""
        self._in_flight_bytes.set_function(used)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics in the format ``accept`` asks for (Prometheus text by default, or
        OpenMetrics), and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def endpoint(self, token: bytes | None) -> Handler:
        """The ``/metrics`` handler: open when ``token`` is ``None``, else only for requests
        bearing it (401 otherwise)."""

        async def metrics(request: Request) -> Response:
            if token is not None and not hmac.compare_digest(_bearer(request), token):
                error = {"type": "TokenRejected", "message": "the metrics token is required"}
                return JSONResponse(
                    {"error": error}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
            body, content_type = self.exposition(request.headers.get("accept", ""))
            return Response(body, headers={"Content-Type": content_type})

        return metrics


def _too_large_reason(exc: BaseException) -> str:
    """Which limit a 413 is about, from its message (tests/test_service_operations.py pins
    each limit's message to its reason)."""
    detail = str(getattr(exc, "detail", exc))
    for word, reason in [
        ("body", "body_too_large"),
        ("batch", "batch_too_large"),
        ("listing", "listing_too_large"),
    ]:
        if word in detail:
            return reason
    return "request_too_large"  # over the in-flight budget, or a limit added since
