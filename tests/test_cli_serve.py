"""``agent-datastore serve``: the installed command serves remote proxies, and refuses to
start without a proper secret."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent_datastore import RemoteDataStoreProxy, TokenRejected, issue_token

SECRET = "the secret of the serve command's test, 32+ bytes"


def _command() -> str:
    script = shutil.which("agent-datastore", path=str(Path(sys.executable).parent))
    assert script is not None
    return script


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the service did not start listening")


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _serve(options: list[str], environment: dict[str, str]) -> tuple[str, subprocess.Popen[str]]:
    """``agent-datastore serve`` with ``options`` on a free port: its URL and process, once it
    is listening."""
    port = _free_port()
    process = subprocess.Popen(
        [_command(), "serve", "--port", str(port), *options],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # the tests stop it with SIGINT and expect 130: a test run started with SIGINT
        # ignored (nohup, a background job) would pass that on, and uvicorn keeps it ignored
        preexec_fn=_interruptible,
    )
    try:
        _wait_for(port, process)
    except BaseException:
        process.kill()
        process.communicate(timeout=30)
        raise
    return f"http://127.0.0.1:{port}", process


def test_serve_answers_remote_proxies_and_stops_on_sigint() -> None:
    environment = {**os.environ, "AGENT_DATASTORE_SECRET": SECRET}
    environment.pop("AGENT_DATASTORE_URI", None)
    url, process = _serve(["--embedded", "--max-batch", "2"], environment)
    try:
        with RemoteDataStoreProxy(url, issue_token(SECRET, "user-1", "agent-a")) as proxy:
            proxy.set("k", {"v": 2**70})
            assert proxy.get("k") == {"v": 2**70}
            # over --max-batch: the service answers 413 with its limit, and the proxy sends
            # the batch again in parts that fit
            assert proxy.set_many({"a": 1, "b": 2, "c": 3}) == 3
            assert proxy.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
            response = httpx.post(
                f"{url}/v1/get_many",
                json={"keys": ["a", "b", "c"]},
                headers={"authorization": f"Bearer {issue_token(SECRET, 'user-1', 'agent-a')}"},
            )
            assert response.status_code == 413
            assert "at most 2 items" in response.json()["error"]["message"]
        forged = issue_token("not the service's secret, but long enough", "user-1", "agent-a")
        with RemoteDataStoreProxy(url, forged) as proxy, pytest.raises(TokenRejected):
            proxy.get("k")
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    # uvicorn finishes the requests in flight, then lets the signal end the process: 130 is
    # the command's documented code for Ctrl-C
    assert process.returncode == 130, errors
    assert "Shutting down" in errors
    assert errors.count("serving a new in-memory store: nothing persists") == 1


@pytest.mark.parametrize(
    ("secret", "options", "message"),
    [
        (None, [], "set AGENT_DATASTORE_SECRET"),
        ("short", [], "at least 32 bytes"),
        (SECRET, ["--rate-limit", "lots"], "REQUESTS/SECONDS"),
        (SECRET, ["--rate-limit", "0/1"], "positive number of requests"),
        (SECRET, ["--request-timeout", "0"], "--request-timeout"),
        (SECRET, ["--request-timeout", "inf"], "request_timeout must be a positive number"),
        (SECRET, ["--max-connections", "0"], "--max-connections"),
    ],
)
def test_serve_refuses_to_start_without_a_proper_configuration(
    secret: str | None, options: list[str], message: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "AGENT_DATASTORE_SECRET"}
    if secret is not None:
        environment["AGENT_DATASTORE_SECRET"] = secret
    result = subprocess.run(
        [_command(), "serve", "--embedded", "--port", str(_free_port()), *options],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _environment(**variables: str) -> dict[str, str]:
    names = ("AGENT_DATASTORE_SECRET", "AGENT_DATASTORE_URI")
    return {**{k: v for k, v in os.environ.items() if k not in names}, **variables}


@pytest.mark.parametrize(
    ("options", "uri", "message"),
    [
        ([], None, "serve needs a database: set AGENT_DATASTORE_URI"),
        (["--embedded", "--uri", "mongomock://"], None, "--embedded serves a new in-memory"),
        (["--embedded"], "mongomock://", "unset AGENT_DATASTORE_URI"),
    ],
)
def test_serve_runs_on_the_embedded_store_only_when_told(
    options: list[str], uri: str | None, message: str
) -> None:
    environment = _environment(AGENT_DATASTORE_SECRET=SECRET)
    if uri is not None:
        environment["AGENT_DATASTORE_URI"] = uri
    result = subprocess.run(
        [_command(), "serve", "--port", str(_free_port()), *options],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("agent-datastore: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1  # one line


PASSWORD = "pw-that-must-not-show"


@pytest.mark.parametrize(
    ("before", "after", "uri", "warned"),
    [
        ([], ["--uri", f"mongodb://svc:{PASSWORD}@127.0.0.1:1/agents"], None, True),
        (["--uri", f"mongodb://svc:{PASSWORD}@127.0.0.1:1/agents"], [], None, True),
        ([], [], f"mongodb://svc:{PASSWORD}@127.0.0.1:1/agents", False),
        ([], ["--uri", "mongodb://127.0.0.1:1/agents"], None, False),
    ],
    ids=["serve-uri", "main-uri", "environment", "no-password"],
)
def test_serve_warns_of_a_password_on_the_command_line(
    before: list[str], after: list[str], uri: str | None, warned: bool
) -> None:
    # a secret too short stops the command once it has chosen its URI, before it connects
    environment = _environment(AGENT_DATASTORE_SECRET="short")
    if uri is not None:
        environment["AGENT_DATASTORE_URI"] = uri
    result = subprocess.run(
        [_command(), *before, "serve", "--port", str(_free_port()), *after],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "at least 32 bytes" in result.stderr
    assert ("holds a password" in result.stderr) is warned, result.stderr
    assert PASSWORD not in result.stderr
    if warned:
        assert "export AGENT_DATASTORE_URI instead" in result.stderr


def test_serve_takes_its_database_from_the_environment() -> None:
    environment = _environment(AGENT_DATASTORE_SECRET=SECRET, AGENT_DATASTORE_URI="mongomock://")
    url, process = _serve([], environment)
    try:
        with RemoteDataStoreProxy(url, issue_token(SECRET, "user-1", "agent-a")) as proxy:
            proxy.set("k", "v")
            assert proxy.get("k") == "v"
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 130, errors
    assert "needs a database" not in errors
    assert "password" not in errors
