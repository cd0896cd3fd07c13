"""Liveness and readiness of the store service, for load balancers and orchestrators.

``/healthz`` says only that the process answers HTTP: it touches neither tokens nor the
database, so an orchestrator restarts the process only when the process itself is stuck, never
because the database is away. ``/readyz`` says whether the store can serve: its database
answers, and the unique and TTL indexes are in place (the store's ``missing_indexes``
operation, one ``listIndexes`` command). Its answer names no host and carries no driver
message; the details go to the ``agent_datastore.server`` log, once per change of state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import _operations as ops
from ._async import AsyncDataStore
from ._exceptions import DataStoreUnavailable
from ._store import DataStore

__all__ = ["READINESS_CACHE_SECONDS", "READINESS_TIMEOUT_SECONDS", "Readiness", "healthz"]

# A healthy database answers listIndexes in milliseconds; the first check also opens the first
# connection and may create the indexes, which can take longer: it goes on after the probe has
# had its 503, and a later probe sees its outcome.
READINESS_TIMEOUT_SECONDS = 2.0
# Probes from several load balancers and an orchestrator, or a flood of them, cost at most one
# database command a second.
READINESS_CACHE_SECONDS = 1.0

# A probe's answer must be taken from the service, never from a cache between them.
_NOT_CACHED = {"Cache-Control": "no-store"}

logger = logging.getLogger("agent_datastore.server")


async def healthz(request: Request) -> Response:
    """Liveness: 200 whenever the process answers."""
    return JSONResponse({"status": "ok"}, headers=_NOT_CACHED)


class Readiness:
    """Whether ``store`` can serve requests now.

    At most one check runs at a time: probes that arrive meanwhile wait for that one, each for
    at most ``timeout`` seconds, and a finished check's outcome answers every probe for the
    next ``cache_seconds``. A check runs the store's own way (on the event loop for an
    ``AsyncDataStore``, in a thread for a ``DataStore``), so a store that ensures its indexes on
    first use creates them on the first check: a new service becomes ready without waiting
    for a first request, which a load balancer would not send it before it is ready.
    """

    def __init__(
        self,
        store: DataStore | AsyncDataStore,
        *,
        timeout: float = READINESS_TIMEOUT_SECONDS,
        cache_seconds: float = READINESS_CACHE_SECONDS,
    ) -> None:
        self._store = store
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._outcome: tuple[float, str | None] | None = None  # when, and why not ready
        self._check: asyncio.Task[str | None] | None = None
        self._logged: object = self  # the state last logged; self: none yet

    async def not_ready_reason(self) -> str | None:
        """``None`` when the store is ready, else why not, in words that name nothing of the
        database: ``database unavailable``, ``database error``, ``indexes missing`` or
        ``timeout``."""
        outcome = self._outcome
        if outcome is not None and time.monotonic() - outcome[0] < self._cache_seconds:
            return outcome[1]
        loop = asyncio.get_running_loop()
        check = self._check
        # a task of another event loop (an application served by successive loops, as tests
        # do) can never finish here
        if check is None or check.done() or check.get_loop() is not loop:
            check = self._check = loop.create_task(self._run_check())
        try:
            # shielded: a probe that gives up leaves the check running for the next probes
            return await asyncio.wait_for(asyncio.shield(check), self._timeout)
        except asyncio.TimeoutError:
            self._log_change("timeout", None)
            return "timeout"

    async def _run_check(self) -> str | None:
        details: Any = None
        try:
            if isinstance(self._store, AsyncDataStore):
                missing = await self._store._run(ops.missing_indexes())
            else:
                missing = await asyncio.to_thread(self._store._run, ops.missing_indexes())
        except DataStoreUnavailable as exc:
            reason: str | None = "database unavailable"
            details = exc
        except Exception as exc:
            reason, details = "database error", exc
        else:
            reason = "indexes missing" if missing else None
            details = missing
        self._outcome = (time.monotonic(), reason)
        self._log_change(reason, details)
        return reason

    def _log_change(self, reason: str | None, details: Any) -> None:
        """Log the state when it changes: probes every few seconds must not flood the log."""
        if reason == self._logged:
            return
        self._logged = reason
        if reason is None:
            logger.info("ready: the database answers and the indexes are in place")
        elif reason == "indexes missing":
            logger.warning(
                "not ready: the collection lacks the index(es) %s; run 'agent-datastore "
                "ensure-indexes' or serve a store that creates them",
                ", ".join(details),
            )
        elif reason == "timeout":
            logger.warning(
                "not ready: the readiness check did not finish within %s s", self._timeout
            )
        else:
            logger.warning("not ready: %s", reason, exc_info=details)

    async def endpoint(self, request: Request) -> Response:
        """Readiness: 200 when ready, else 503 with the reason."""
        reason = await self.not_ready_reason()
        if reason is None:
            return JSONResponse({"status": "ready"}, headers=_NOT_CACHED)
        body = {"status": "not ready", "reason": reason}
        return JSONResponse(body, status_code=503, headers=_NOT_CACHED)
