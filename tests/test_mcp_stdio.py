"""``agent-datastore mcp`` on stdio in a subprocess, as a desktop client starts it: the SDK's
client drives it, stdout carries the protocol and nothing else, and the command's usage
errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

import agent_datastore
from agent_datastore.cli import cli
from agent_datastore.mcp import item_uri

from .mcp_helpers import EXACT_VALUE

COMMAND = [sys.executable, "-m", "agent_datastore.cli", "mcp"]
LOCAL = ["--uri", "mongomock://", "--user", "ada", "--agent", "indexer"]


def _environment() -> dict[str, str]:
    """The child's environment: this one's (so it imports the same package), without a
    database or a secret of the caller's."""
    names = ("AGENT_DATASTORE_URI", "AGENT_DATASTORE_SECRET", "AGENT_DATASTORE_TOKEN")
    return {name: value for name, value in os.environ.items() if name not in names}


def test_the_sdks_stdio_client_drives_the_command() -> None:
    environment = _environment()
    parameters = StdioServerParameters(
        command=COMMAND[0], args=[*COMMAND[1:], *LOCAL], env=environment
    )

    async def main() -> None:
        async with Client(stdio_client(parameters)) as client:
            key = "$a.b/ü"
            stored = await client.call_tool("set", {"key": key, "value": EXACT_VALUE})
            assert not stored.is_error, stored.content
            got = await client.call_tool("get", {"key": key})
            assert got.structured_content == {"key": key, "found": True, "value": EXACT_VALUE}
            # the text form carries the same JSON, exactly
            assert got.content[0].type == "text"
            assert json.loads(got.content[0].text) == EXACT_VALUE
            read = await client.read_resource(item_uri("default", key))
            assert json.loads(read.contents[0].text)["value"] == EXACT_VALUE  # type: ignore[union-attr]
            refused = await client.call_tool("set", {"key": "k", "value": 1, "user": "bob"})
            assert refused.is_error

    asyncio.run(main())


def _message(identifier: int, method: str, params: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": identifier, "method": method, "params": params})


def test_stdout_carries_the_protocol_only_and_stderr_says_nothing_persists() -> None:
    lines = [
        *_initialize(1),
        _message(2, "tools/call", {"name": "set", "arguments": {"key": "n", "value": 2**64 + 1}}),
        _message(3, "tools/call", {"name": "get", "arguments": {"key": "n"}}),
        _message(4, "tools/call", {"name": "increment", "arguments": {"key": "n"}}),
    ]
    answers = {}
    with subprocess.Popen(
        [*COMMAND, *LOCAL],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    ) as process:
        watchdog = threading.Timer(60, process.kill)  # a hung server fails the test, not the run
        watchdog.start()
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            for line in lines:
                process.stdin.write(line + "\n")
                process.stdin.flush()
                if '"id"' not in line:
                    continue  # a notification has no answer
                message = json.loads(process.stdout.readline())  # a JSON-RPC message, whole
                assert message["jsonrpc"] == "2.0"
                answers[message["id"]] = message
            # end of input: the server stops by itself
            rest, errors = process.communicate(timeout=30)
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, errors
    assert rest == ""  # nothing else ever reached stdout
    assert sorted(answers) == [1, 2, 3, 4]
    assert answers[1]["result"]["serverInfo"]["name"] == "agent-datastore"
    assert answers[3]["result"]["structuredContent"]["value"] == 2**64 + 1
    assert answers[4]["result"]["isError"] is True
    assert errors.count("nothing persists") == 1


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    [
        ([], {}, "mcp needs a store"),
        (["--uri", "mongomock://"], {}, "--user USER --agent AGENT"),
        (["--uri", "mongomock://", "--url", "http://127.0.0.1:1"], {}, "not both"),
        (["--url", "http://127.0.0.1:1", "--user", "ada"], {}, "the token names"),
        (["--url", "http://127.0.0.1:1"], {}, "AGENT_DATASTORE_TOKEN"),
        (["--transport", "http", "--uri", "mongomock://"], {}, "AGENT_DATASTORE_SECRET"),
        (
            ["--transport", "http", "--uri", "mongomock://", "--user", "ada"],
            {"AGENT_DATASTORE_SECRET": "s" * 32},
            "give no --user",
        ),
        (["--uri", "mongomock://", "--user", "", "--agent", "a"], {}, "must not be empty"),
    ],
)
def test_usage_errors(arguments: list[str], environment: dict[str, str], message: str) -> None:
    runner = CliRunner()
    cleared = {"AGENT_DATASTORE_URI": None, "AGENT_DATASTORE_SECRET": None}
    result = runner.invoke(
        cli, ["mcp", *arguments], env={**cleared, "AGENT_DATASTORE_TOKEN": None, **environment}
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_without_the_extra_the_command_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # the SDK absent: agent_datastore.mcp is imported afresh and fails to import it
    monkeypatch.setitem(sys.modules, "mcp", None)
    monkeypatch.delitem(sys.modules, "agent_datastore.mcp")
    monkeypatch.delattr(agent_datastore, "mcp")
    result = CliRunner().invoke(
        cli, ["mcp", "--uri", "mongomock://", "--user", "u", "--agent", "a"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "agent-datastore: agent_datastore.mcp needs the MCP SDK: "
        "pip install 'agent-datastore[mcp]'\n"
    )
    assert result.stdout == ""


def _initialize(identifier: int = 0) -> list[str]:
    """The handshake's lines: ``initialize`` (as request ``identifier``), then its
    notification."""
    return [
        _message(
            identifier,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            },
        ),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ]


def _raw_set(identifier: int, value: str) -> str:
    """A ``set`` request whose value is the JSON text ``value``, as written."""
    return (
        f'{{"jsonrpc":"2.0","id":{identifier},"method":"tools/call","params":{{"name":"set",'
        f'"arguments":{{"key":"k","value":{value}}}}}}}'
    )


def _lines_answered(lines: list[str]) -> list[dict[str, Any]]:
    """The messages the command writes for ``lines``, given all at once and then end of
    input, as a client that sends its requests and closes the pipe at once."""
    completed = subprocess.run(
        [*COMMAND, *LOCAL],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines()]


def test_a_line_that_is_no_message_is_answered_and_every_request_read_is_answered() -> None:
    deep = "[" * 250 + "]" * 250
    lines = [
        *_initialize(),
        "garbage",
        # a lone surrogate escape, nesting past the SDK's parser, an integer past 4,300 digits
        _raw_set(1, '"\\ud800"'),
        _raw_set(2, deep),
        _raw_set(3, "1" + "0" * 4300),
        json.dumps([1, 2]),  # JSON, but no JSON-RPC message
        # read before the end of input: each gets its answer before the server stops
        *(
            _message(identifier, "tools/call", {"name": "increment", "arguments": {"key": "n"}})
            for identifier in range(10, 20)
        ),
    ]
    answers = _lines_answered(lines)
    errors = [answer["error"] for answer in answers if answer.get("id") is None]
    assert [error["code"] for error in errors] == [-32700, -32700, -32700, -32700, -32600]
    assert all(error["message"].startswith("Parse error: ") for error in errors[:4])
    assert "recursion limit" in errors[2]["message"]
    results = {answer["id"]: answer["result"] for answer in answers if "result" in answer}
    assert sorted(results) == [0, *range(10, 20)]
    counted = sorted(
        result["structuredContent"]["value"]
        for result in results.values()
        if "structuredContent" in result
    )
    assert counted == list(range(1, 11))
