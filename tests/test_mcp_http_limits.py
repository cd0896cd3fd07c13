"""What keeps one holder of a token from stalling or exhausting ``agent-datastore mcp
--transport http`` for the others, against the real command on 127.0.0.1: the request
deadline and the bound on connections of ``serve``, a body limit that refuses before the body
is read whole, a rate limit per token, and no event stream to hold open.

The server runs with a 1 s deadline; a socket waits at most ``WAIT`` seconds for it to close a
connection, so a connection kept open fails its test instead of hanging it."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from agent_datastore import issue_token
from agent_datastore.cli import cli
from agent_datastore.mcp import create_http_app

from .service import SECRET
from .test_mcp_http import serving
from .test_service_connections import (
    WAIT,
    Service,
    _exchange,
    _free_port,
    _read_until_closed,
    running_server,
)

REQUEST_TIMEOUT = 1
MAX_CONNECTIONS = 4
MAX_BODY_BYTES = 64 * 1024
RATE = 3  # requests per minute for each token: the whole number at once
ACCEPT = "application/json, text/event-stream"


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


LISTING = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


def _head(port: int, token: str | None, content_length: int | None, *extra: str) -> bytes:
    lines = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Accept: {ACCEPT}"]
    lines.append("Content-Type: application/json")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def _request(port: int, token: str, message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return _head(port, token, len(body)) + body


@contextmanager
def _mcp_serving(*options: str) -> Iterator[Service]:
    """``agent-datastore mcp --transport http`` over a new in-memory store with ``options``,
    on a free port of 127.0.0.1, until the block ends."""
    port = _free_port()
    environment = {**os.environ, "AGENT_DATASTORE_SECRET": SECRET}
    environment.pop("AGENT_DATASTORE_URI", None)
    command = [
        *(
            sys.executable,
            "-c",
            "import sys; from agent_datastore.cli import main; sys.exit(main())",
        ),
        *("mcp", "--transport", "http", "--uri", "mongomock://", "--port", str(port), *options),
    ]
    token = issue_token(SECRET, "probe", "probe")
    body = json.dumps(LISTING).encode()
    probe = _head(port, token, len(body), "Connection: close") + body
    with running_server(command, environment, port, probe) as service:
        yield service


@pytest.fixture(scope="module")
def server() -> Iterator[Service]:
    options = {
        "--request-timeout": REQUEST_TIMEOUT,
        "--max-connections": MAX_CONNECTIONS,
        "--max-body-bytes": MAX_BODY_BYTES,
        "--rate-limit": f"{RATE}/60",
    }
    with _mcp_serving(*(str(part) for option in options.items() for part in option)) as running:
        yield running


def _post(server: Service, token: str | None, message: Any, **options: Any) -> httpx.Response:
    headers = {"accept": ACCEPT}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    url = f"http://127.0.0.1:{server.port}/mcp"
    return httpx.post(url, json=message, headers=headers, timeout=WAIT, **options)


def _result(answer: httpx.Response) -> Any:
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert not result.get("isError"), result
    return result["structuredContent"]


def test_a_request_that_does_not_arrive_whole_is_closed_at_the_deadline(server: Service) -> None:
    token = issue_token(SECRET, "slow", "agent")
    with server.connect() as connection:
        connection.sendall(_head(server.port, token, None)[:-4])  # headers, never ended
        assert _read_until_closed(connection) == b""
    with server.connect() as connection:
        connection.sendall(_head(server.port, token, 100) + b'{"jsonrpc":')  # body cut short
        assert _read_until_closed(connection) == b""


def _listing(server: Service) -> bytes:
    # a new token each time: the rate limit is not what these requests test
    return _request(server.port, issue_token(SECRET, "many", "agent"), LISTING)


def test_connections_beyond_the_bound_are_closed_until_held_ones_end(server: Service) -> None:
    def served_on_a_new_connection() -> bool:
        with server.connect() as connection:
            connection.settimeout(2)
            try:
                return _exchange(connection, _listing(server))[0] == 200
            except (ConnectionError, TimeoutError):
                return False

    with ExitStack() as stack:
        held = [stack.enter_context(server.connect()) for _ in range(MAX_CONNECTIONS)]
        for connection in held:  # each served, then kept open between requests
            assert _exchange(connection, _listing(server))[0] == 200
        assert not served_on_a_new_connection()
        assert f"{MAX_CONNECTIONS} connections open: closing new ones" in server.logged()
        held.pop().close()
        deadline = time.monotonic() + WAIT
        while not served_on_a_new_connection():
            assert time.monotonic() < deadline, "a closed connection did not free its slot"
            time.sleep(0.1)


def test_an_oversized_body_is_refused_with_413_and_runs_no_tool(server: Service) -> None:
    def token() -> str:  # a new one each time: the rate limit is not what this tests
        return issue_token(SECRET, "big", "agent")

    large = _call("set", {"key": "large", "value": "x" * MAX_BODY_BYTES})
    answer = _post(server, token(), large)
    assert answer.status_code == 413
    assert "over 65536 bytes" in answer.json()["error"]["message"]
    # streamed, with no Content-Length to refuse it by
    chunked = _post_chunked(server, token(), json.dumps(large).encode())
    assert chunked.status_code == 413
    assert _result(_post(server, token(), _call("get", {"key": "large"})))["found"] is False
    fitting = _call("set", {"key": "fits", "value": "x" * (MAX_BODY_BYTES - 200)})
    assert _result(_post(server, token(), fitting))["written"] is True


def _post_chunked(server: Service, token: str, body: bytes) -> httpx.Response:
    pieces = [body[start : start + 8192] for start in range(0, len(body), 8192)]
    return _post(server, token, None, content=iter(pieces))


def _status_line(connection: socket.socket) -> bytes:
    """The first line of the answer on ``connection`` (which must come within ``WAIT``)."""
    received = b""
    while b"\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionAbortedError(f"closed by the server before an answer: {received!r}")
        received += chunk
    return received.partition(b"\r\n")[0]


def _status_code(connection: socket.socket) -> int:
    """The status of the answer on ``connection``; its reason phrase is the server's own
    (Python 3.13 names 413 "Content Too Large", earlier ones "Request Entity Too Large")."""
    return int(_status_line(connection).split(b" ")[1])


def test_a_body_over_the_limit_is_refused_before_it_arrives_whole(server: Service) -> None:
    token = issue_token(SECRET, "early", "agent")
    # a declared length over the limit: answered at once, with none of the body sent
    with server.connect() as connection:
        connection.sendall(_head(server.port, token, 10 * MAX_BODY_BYTES))
        assert _status_code(connection) == 413
    # a chunked body that goes past the limit and never ends: answered once past it
    with server.connect() as connection:
        connection.sendall(_head(server.port, token, None, "Transfer-Encoding: chunked"))
        chunk = b"x" * (MAX_BODY_BYTES + 1)
        connection.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        assert _status_code(connection) == 413


def test_a_token_over_its_rate_gets_429_while_another_token_is_served(server: Service) -> None:
    hasty = issue_token(SECRET, "ada", "agent")
    for number in range(RATE):
        _result(_post(server, hasty, _call("set", {"key": f"k{number}", "value": number})))
    refused = _post(server, hasty, _call("set", {"key": "over", "value": 1}))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["message"] == "too many requests for this token"
    other = issue_token(SECRET, "bob", "agent")
    assert _result(_post(server, other, _call("get", {"key": "k0"})))["found"] is False
    # another token of the same agent: its own rate, and the refused set wrote nothing
    same_agent = issue_token(SECRET, "ada", "agent")
    assert _result(_post(server, same_agent, _call("get", {"key": "k0"})))["value"] == 0
    assert _result(_post(server, same_agent, _call("get", {"key": "over"})))["found"] is False


def test_a_request_without_a_valid_token_is_refused_before_its_body_is_read(
    server: Service,
) -> None:
    with server.connect() as connection:
        connection.sendall(_head(server.port, None, 10 * MAX_BODY_BYTES))
        assert _status_code(connection) == 401


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_no_event_stream_or_session_can_be_held_open(server: Service, method: str) -> None:
    token = issue_token(SECRET, "streams", "agent")
    headers = {"accept": "text/event-stream", "authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{server.port}/mcp"
    answer = httpx.request(method, url, headers=headers, timeout=WAIT)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"


def test_the_default_body_limit_takes_a_value_larger_than_the_sdks_own_default() -> None:
    value = "x" * (5 * 1024 * 1024)  # the SDK alone refuses bodies over 4 MiB
    token = issue_token(SECRET, "large", "agent")
    headers = {"accept": ACCEPT, "authorization": f"Bearer {token}"}
    with serving(create_http_app(SECRET, uri="mongomock://")) as url:
        stored = httpx.post(url, json=_call("set", {"key": "k", "value": value}), headers=headers)
        assert _result(stored)["written"] is True
        read = httpx.post(url, json=_call("get", {"key": "k"}), headers=headers, timeout=WAIT)
        assert _result(read)["value"] == value


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--request-timeout", "0", "--request-timeout"),
        ("--max-connections", "0", "--max-connections"),
        ("--max-body-bytes", "0", "--max-body-bytes"),
        ("--rate-limit", "fast", "--rate-limit must be REQUESTS/SECONDS"),
        ("--rate-limit", "0/60", "rate_limit needs a positive number of requests"),
    ],
)
def test_the_limits_are_checked_before_anything_is_served(
    option: str, value: str, said: str
) -> None:
    arguments = ["mcp", "--transport", "http", "--uri", "mongomock://", option, value]
    result = CliRunner().invoke(cli, arguments, env={"AGENT_DATASTORE_SECRET": SECRET})
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_a_rate_limit_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="positive number of requests"):
        create_http_app(SECRET, uri="mongomock://", rate_limit=(0, 60))
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_http_app(SECRET, uri="mongomock://", max_body_bytes=0)


def test_one_agent_cannot_hold_the_budget_of_bodies_in_flight() -> None:
    budget = 400_000  # a quarter of it for one user's agent with requests in parallel
    app = create_http_app(
        SECRET, uri="mongomock://", max_body_bytes=MAX_BODY_BYTES, max_inflight_bytes=budget
    )
    held = app.state.inflight_budget
    declared = 60_000

    def wait_until_used(amount: int) -> None:
        deadline = time.monotonic() + WAIT
        while held.used != amount:
            assert time.monotonic() < deadline, f"{held.used} bytes held, not {amount}"
            time.sleep(0.01)

    with serving(app) as url:
        port = int(url.split(":")[2].split("/")[0])
        url_headers = {"accept": ACCEPT}
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as slow:
            # ada's body, declared and never sent: its length is held until it ends
            slow.sendall(_head(port, issue_token(SECRET, "ada", "agent"), declared))
            wait_until_used(declared)
            # another agent is served beside it
            bob = {**url_headers, "authorization": f"Bearer {issue_token(SECRET, 'bob', 'a')}"}
            assert httpx.post(url, json=LISTING, headers=bob, timeout=WAIT).status_code == 200
            # ada's next body does not fit in what her agent may still hold: 503, not stored
            ada = {**url_headers, "authorization": f"Bearer {issue_token(SECRET, 'ada', 'agent')}"}
            value = "x" * (declared - 100)
            busy = httpx.post(url, json=_call("set", {"key": "k", "value": value}), headers=ada)
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "1"
        wait_until_used(0)  # given back when the connection closed
        read = httpx.post(url, json=_call("get", {"key": "k"}), headers=ada, timeout=WAIT)
        assert _result(read)["found"] is False
        stored = httpx.post(url, json=_call("set", {"key": "k", "value": value}), headers=ada)
        assert _result(stored)["written"] is True
        wait_until_used(0)  # given back once the answer was sent
        # a body whose parsing alone would hold more than the whole budget: 413
        many_values = _call("set", {"key": "many", "value": [1] * 20_000})
        refused = httpx.post(url, json=many_values, headers=ada, timeout=WAIT)
        assert refused.status_code == 413
        assert "in-flight budget" in refused.json()["error"]["message"]
