"""The connections of ``agent-datastore serve``, against the real command on 127.0.0.1: a
request that does not arrive whole within ``--request-timeout`` loses its connection, however
slowly its bytes trickle in; a keep-alive connection idle between requests is not cut; at
most ``--max-connections`` are open at once; the service raises its open-file limit and keeps
its connections below it.

The service runs with a 1 s deadline; a socket waits at most ``WAIT`` seconds for the service
to close it, so a connection the service keeps open fails its test instead of hanging it."""

from __future__ import annotations

import inspect
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

import pytest

from agent_datastore import issue_token, server
from agent_datastore._connections import (
    ACCEPT_BURSTS,
    DEFAULT_BACKLOG,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    OWN_FILES,
    connection_limits,
    database_pool_size,
    files_wanted,
)

SECRET = "the secret of the connection tests, 32 bytes or more"
TOKEN = issue_token(SECRET, "user-1", "agent-a")
REQUEST_TIMEOUT = 1
WAIT = 15  # seconds: far beyond the deadline, and a hang fails the test
TRICKLE_SECONDS = 0.3
HALF_OPEN = b"POST /v1/get HTTP/1.1\r\nHost: x\r\n"


@dataclass
class Service:
    port: int
    process: subprocess.Popen[bytes]
    log: IO[str]

    def connect(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        connection.settimeout(WAIT)
        return connection

    def logged(self) -> str:
        self.log.seek(0)
        return self.log.read()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _head(method: str, path: str, content_length: int, *, token: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {content_length}"]
    if token:
        lines.append(f"Authorization: Bearer {TOKEN}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _request(path: str, body: Any = None) -> bytes:
    if body is None:
        return _head("GET", path, 0)
    content = json.dumps(body).encode()
    return _head("POST", path, len(content)) + content


def _exchange(connection: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send ``request``, read its answer (which must have a Content-Length): status, body."""
    connection.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionAbortedError(f"closed by the service before an answer: {received!r}")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:")
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("closed by the service within an answer")
        body += chunk
    return int(lines[0].split()[1]), body


def _read_until_closed(connection: socket.socket) -> bytes:
    """Whatever the service sends until it closes the connection (an end of file, or a reset
    when it closed with bytes of ours unread); fails if it is still open after ``WAIT``."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the service kept the connection open for {WAIT} s") from None
    return received


def _wait_until_serving(service: Service, probe: bytes) -> None:
    """Until ``probe``, a request that asks for the connection to be closed, is answered 200:
    the server is up. Fails if its process ends first, or after a minute."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert service.process.poll() is None, service.logged()
        try:
            # closed by the server, which forgets the connection before it closes it: so the
            # probe holds none of --max-connections once it has read the end of file
            with service.connect() as connection:
                connection.sendall(probe)
                if _read_until_closed(connection).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the server did not start:\n{service.logged()}")


@contextmanager
def running_server(
    command: list[str], environment: dict[str, str], port: int, probe: bytes
) -> Iterator[Service]:
    """``command``, a server on ``port`` of 127.0.0.1, from when it answers ``probe``
    (``_wait_until_serving``) until the block ends, then stopped with SIGINT."""
    # uvicorn logs every request: to a file, so that a full pipe can never stall the server
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=log)
        service = Service(port, process, log)
        try:
            _wait_until_serving(service, probe)
            yield service
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def _serving(*options: str, open_files: tuple[int, int] | None = None) -> Iterator[Service]:
    """``agent-datastore serve --embedded`` with ``options`` on a free port of 127.0.0.1 until
    the block ends; with ``open_files``, started with that (soft, hard) open-file limit."""
    port = _free_port()
    environment = {**os.environ, "AGENT_DATASTORE_SECRET": SECRET}
    environment.pop("AGENT_DATASTORE_URI", None)
    limit = (
        "" if open_files is None else f"resource.setrlimit(resource.RLIMIT_NOFILE, {open_files})"
    )
    # the command's own entry point, in an interpreter that first sets the limit it inherits
    start = "\n".join(
        ["import resource, sys", limit, "from agent_datastore.cli import main", "sys.exit(main())"]
    )
    command = [sys.executable, "-c", start, "serve", "--embedded", "--port", str(port), *options]
    probe = _head("GET", "/v1/openapi.json", 0)[:-2] + b"Connection: close\r\n\r\n"
    with running_server(command, environment, port, probe) as service:
        yield service


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with _serving("--request-timeout", str(REQUEST_TIMEOUT)) as running:
        yield running


def test_a_connection_that_sends_part_of_its_headers_is_closed(service: Service) -> None:
    with service.connect() as connection:
        connection.sendall(HALF_OPEN)
        assert b"200 OK" not in _read_until_closed(connection)


def test_a_connection_that_sends_nothing_is_closed(service: Service) -> None:
    with service.connect() as connection:
        assert _read_until_closed(connection) == b""


@pytest.mark.parametrize("token", [True, False], ids=["with-token", "without-token"])
def test_a_body_shorter_than_its_content_length_is_closed(service: Service, token: bool) -> None:
    # with a token the service waits for the rest of the body; without, it answers 401 at once
    # and the connection still owes the rest of its body
    with service.connect() as connection:
        connection.sendall(_head("POST", "/v1/get", 1000, token=token) + b'{"key": "k"}')
        assert b"200 OK" not in _read_until_closed(connection)


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_request_trickling_a_byte_at_a_time_is_closed_at_the_deadline(
    service: Service, part: str
) -> None:
    if part == "headers":
        start, trickle = HALF_OPEN, b"X-Slow: " + b"a" * 1000
    else:
        start, trickle = _head("POST", "/v1/get", 1000), b" " * 1000
    deadline = time.monotonic() + WAIT
    with service.connect() as connection:
        connection.sendall(start)
        for byte in trickle:
            assert time.monotonic() < deadline, f"the service kept the trickle for {WAIT} s"
            try:
                connection.sendall(bytes([byte]))
            except ConnectionError:
                return  # closed by the service
            readable, _, _ = select.select([connection], [], [], TRICKLE_SECONDS)
            if readable:
                assert b"200 OK" not in _read_until_closed(connection)
                return
    raise AssertionError("the service read the whole trickle")


def test_complete_requests_are_answered_and_an_idle_connection_is_kept_between_them(
    service: Service,
) -> None:
    with service.connect() as connection:
        assert _exchange(connection, _request("/v1/set", {"key": "k", "value": [1, 2]}))[0] == 200
        # idle for several request deadlines: only the keep-alive timeout (75 s) applies
        time.sleep(3 * REQUEST_TIMEOUT)
        status, body = _exchange(connection, _request("/v1/get", {"key": "k"}))
        assert status == 200
        assert json.loads(body) == {"result": {"found": True, "value": [1, 2]}}


def _served_on_a_new_connection(service: Service) -> bool:
    """Whether a request on a new connection is answered 200 (within a short wait: a
    connection left unserved is not served)."""
    with service.connect() as connection:
        connection.settimeout(2)
        try:
            return _exchange(connection, _request("/v1/openapi.json"))[0] == 200
        except (ConnectionError, TimeoutError):
            return False


def test_connections_beyond_the_bound_are_closed_until_held_ones_end() -> None:
    bound = 3
    # the default deadline, so that the held connections stay
    with _serving("--max-connections", str(bound)) as service, ExitStack() as stack:
        held = [stack.enter_context(service.connect()) for _ in range(bound)]
        for connection in held:
            assert _exchange(connection, _request("/v1/openapi.json"))[0] == 200
        for _ in range(3):
            assert not _served_on_a_new_connection(service)
            # the accepted connections are still served
            assert _exchange(held[0], _request("/v1/get", {"key": "k"}))[0] == 200
        assert "3 connections open: closing new ones" in service.logged()
        held.pop().close()
        deadline = time.monotonic() + WAIT
        while not _served_on_a_new_connection(service):
            assert time.monotonic() < deadline, "a closed connection did not free its slot"
            time.sleep(0.1)


def test_half_open_connections_past_the_open_file_limit_do_not_stop_the_service() -> None:
    # the attack that was seen: more half-open connections than the process may open files
    limit = 256
    with (
        _serving("--request-timeout", str(REQUEST_TIMEOUT), open_files=(limit, limit)) as service,
        ExitStack() as stack,
    ):
        bound, _ = connection_limits(None, OWN_FILES, limit)
        assert f"At most {bound} connections at once" in service.logged()
        for _ in range(limit + 50):
            connection = stack.enter_context(service.connect())
            with suppress(ConnectionError):  # beyond the bound, closed at once
                connection.sendall(HALF_OPEN)
        deadline = time.monotonic() + WAIT
        while not _served_on_a_new_connection(service):
            assert time.monotonic() < deadline, "the service stopped answering"
            time.sleep(0.2)
        log = service.logged()
        assert "Too many open files" not in log
        assert "EMFILE" not in log


def test_the_service_raises_its_open_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = files_wanted(None, OWN_FILES)
    expected = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if expected <= 256:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise")
    with _serving(open_files=(256, hard)) as service:
        assert f"(open-file limit {expected})" in service.logged()


def test_the_default_bound_keeps_files_for_the_database_and_for_accepting() -> None:
    assert database_pool_size("mongodb://db.example/agents") == DEFAULT_POOL_SIZE
    assert database_pool_size("mongodb://db.example/?maxPoolSize=20&w=1") == 20
    assert database_pool_size("mongodb://db.example/?maxpoolsize=0") == DEFAULT_POOL_SIZE
    assert database_pool_size("mongomock://") == 0
    reserved = OWN_FILES + DEFAULT_POOL_SIZE
    for open_files in (reserved + 100, 1024, 4096, 65536):
        bound, backlog = connection_limits(None, reserved, open_files)
        assert 1 <= backlog <= DEFAULT_BACKLOG
        assert bound + reserved + ACCEPT_BURSTS * backlog <= open_files
    assert connection_limits(None, reserved, 1_000_000) == (DEFAULT_MAX_CONNECTIONS, 2048)
    assert connection_limits(None, reserved, files_wanted(None, reserved))[0] == (
        DEFAULT_MAX_CONNECTIONS
    )
    assert connection_limits(None, reserved, None) == (DEFAULT_MAX_CONNECTIONS, 2048)
    assert connection_limits(None, reserved, 100)[0] == 1
    assert connection_limits(5000, reserved, 1024)[0] == 5000  # asked for: kept, with a warning


def test_serve_waits_30_s_for_a_request_by_default() -> None:
    default = inspect.signature(server.serve).parameters["request_timeout"].default
    assert default == DEFAULT_REQUEST_TIMEOUT == 30
