"""The service's defence of its connections, for ``server.serve``: a deadline for each request
to arrive whole, a bound on open connections, and an open-file limit that leaves room for both
the connections and the database.

uvicorn alone keeps a connection open for as long as a client sends a request slowly, or not
at all (its only timeout is the keep-alive between requests), and accepts connections until
the process runs out of file descriptors. ``guarded_h11_protocol`` adds what is missing to
uvicorn's h11 protocol; ``guarded_config`` puts the three together in a ``uvicorn.Config``,
for the store service (``server.serve``) and the MCP server (``mcp.serve_http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no open-file limit to raise
    resource = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "check_options",
    "connection_limits",
    "database_pool_size",
    "files_wanted",
    "guarded_config",
    "guarded_h11_protocol",
    "raise_open_file_limit",
]

DEFAULT_REQUEST_TIMEOUT = 30.0
# Even where the open-file limit allows more: a connection costs memory too, and a service that
# needs more connections than this should run in several processes.
DEFAULT_MAX_CONNECTIONS = 10_000
# Files the process holds besides its clients' connections: the interpreter's, the listening
# socket, the event loop's, logs, and the driver's monitoring connections (two per server).
OWN_FILES = 128
# pymongo's default maxPoolSize: the connections to each database server it may open.
DEFAULT_POOL_SIZE = 100
# Longer than a client's own keep-alive (httpx: 5 s), so that a client never sends a request on
# a connection the server is closing, which a write could not safely retry.
KEEP_ALIVE_SECONDS = 75
# uvicorn's default backlog of the listening socket, kept where the open-file limit allows.
DEFAULT_BACKLOG = 2048
# asyncio accepts up to a backlog of connections at each turn of its event loop, and one closed
# at once for being over the bound still holds its file for two more turns: so a flood of new
# connections holds a few backlogs of files besides the connections kept.
ACCEPT_BURSTS = 4

logger = logging.getLogger("agent_datastore.server")


def check_options(request_timeout: object, max_connections: object) -> None:
    """Raise ``ValueError`` unless both are usable (``max_connections`` may be ``None``)."""
    if (
        isinstance(request_timeout, bool)
        or not isinstance(request_timeout, (int, float))
        or not 0 < request_timeout < math.inf
    ):
        raise ValueError(
            f"request_timeout must be a positive number of seconds, not {request_timeout!r}"
        )
    if max_connections is not None and (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ValueError(f"max_connections must be a positive integer, not {max_connections!r}")


def database_pool_size(uri: str) -> int:
    """How many connections the store's driver may hold open for ``uri``: its ``maxPoolSize``
    (pymongo's default when absent; unlimited counts as the default too, since the requests in
    flight, each using one, are bounded by the connections anyway), none for the embedded
    store."""
    if uri.startswith("mongomock://"):
        return 0
    for name, value in parse_qsl(urlsplit(uri).query):
        if name.lower() == "maxpoolsize" and value.isdigit() and int(value) > 0:
            return int(value)
    return DEFAULT_POOL_SIZE


def raise_open_file_limit(wanted: int) -> int | None:
    """Raise this process's soft limit of open files toward ``wanted``, as far as the hard
    limit allows; the soft limit then, or ``None`` where the system has no such limit."""
    if resource is None:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        # a system cap below the hard limit (macOS) refuses it: the soft limit stays
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def files_wanted(max_connections: int | None, reserved: int) -> int:
    """The open-file limit at which ``connection_limits`` gives every connection asked for
    (``DEFAULT_MAX_CONNECTIONS`` when ``None``) and the default backlog."""
    return (max_connections or DEFAULT_MAX_CONNECTIONS) + reserved + ACCEPT_BURSTS * DEFAULT_BACKLOG


def connection_limits(
    max_connections: int | None, reserved: int, open_files: int | None
) -> tuple[int, int]:
    """The connections to keep open at once, and the listening socket's backlog, for a process
    of ``open_files`` (``None``: no limit) of which ``reserved`` are not for clients.

    ``max_connections`` is kept if given (with a warning if the files do not suffice); else
    the bound is what the files allow after the accept bursts, at most
    ``DEFAULT_MAX_CONNECTIONS``."""
    if open_files is None:
        return max_connections or DEFAULT_MAX_CONNECTIONS, DEFAULT_BACKLOG
    available = open_files - reserved
    backlog = max(1, min(DEFAULT_BACKLOG, available // (2 * ACCEPT_BURSTS)))
    room = max(1, available - ACCEPT_BURSTS * backlog)
    if max_connections is None:
        return min(DEFAULT_MAX_CONNECTIONS, room), backlog
    if max_connections > room:
        logger.warning(
            "max_connections %d is more than the open-file limit of %d allows (%d) with %d "
            "files kept for the database and the process: connections may fail with EMFILE",
            max_connections,
            open_files,
            room,
            reserved,
        )
    return max_connections, backlog


def guarded_h11_protocol(request_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol, plus: a connection whose request has not arrived whole (headers
    and body) ``request_timeout`` seconds after it was accepted, or after the request's first
    byte, is closed; a connection made while ``max_connections`` are open is closed at once.

    The deadline is not reset by each byte received, so a client trickling a byte at a time
    cannot hold a connection longer than one deadline. Between requests, uvicorn's keep-alive
    timeout applies instead."""

    at_bound = False  # whether the bound was reached: logged once each time it is

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            nonlocal at_bound
            if len(self.connections) >= max_connections:
                # before uvicorn counts or serves it: its file descriptor is freed at once
                self._refused = True
                if not at_bound:
                    at_bound = True
                    logger.warning(
                        "%d connections open: closing new ones until some end", max_connections
                    )
                transport.close()
                return
            at_bound = False
            super().connection_made(transport)
            self._arm_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._disarm_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def handle_events(self) -> None:
            # called whenever bytes arrive and after each response (for pipelined requests)
            super().handle_events()
            state = self.conn.their_state
            if state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0]):
                self._arm_deadline()  # a request has begun and is not complete
            elif state is not h11.IDLE:
                self._disarm_deadline()  # complete (DONE, MUST_CLOSE), closed or invalid

        def _arm_deadline(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(request_timeout, self._request_too_slow)

        def _disarm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _request_too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                logger.debug("closing a connection whose request took over %g s", request_timeout)
                self.transport.close()

    return GuardedH11Protocol


def guarded_config(
    app: Any,
    *,
    request_timeout: float,
    max_connections: int | None,
    reserved: int,
    **uvicorn_options: Any,
) -> Any:
    """A ``uvicorn.Config`` serving ``app`` with the guards: the open-file limit raised as far
    as needed, ``guarded_h11_protocol`` with ``request_timeout`` and the bound of
    ``connection_limits`` (``reserved``: the files the process keeps besides its clients'
    connections), the backlog the files allow, no websockets, and ``KEEP_ALIVE_SECONDS``
    between requests. Logs the bound once uvicorn's loggers are configured."""
    import uvicorn

    check_options(request_timeout, max_connections)
    open_files = raise_open_file_limit(files_wanted(max_connections, reserved))
    bound, backlog = connection_limits(max_connections, reserved, open_files)
    config = uvicorn.Config(
        app,
        http=guarded_h11_protocol(request_timeout, bound),
        backlog=backlog,
        ws="none",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        **uvicorn_options,
    )
    # uvicorn has configured its loggers by now: this line goes with its own
    logging.getLogger("uvicorn.error").info(
        "At most %d connections at once (open-file limit %s); a request must arrive whole "
        "within %g s",
        bound,
        open_files if open_files is not None else "none",
        request_timeout,
    )
    return config
