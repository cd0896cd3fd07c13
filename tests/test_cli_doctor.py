"""``doctor`` when there is no store to ask: one line on stderr and exit 3 (database
unavailable, as for every command) in text mode, and a JSON answer on stdout as well under
``--json``, so that a monitor reading stdout always gets an object."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from agent_datastore import DataStoreError, admin
from agent_datastore.cli import cli

REFUSING_URI = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"


def _doctor(*options: str) -> Result:
    return CliRunner().invoke(cli, ["--uri", REFUSING_URI, "doctor", *options])


def test_doctor_without_a_database_says_so_in_one_line_and_exits_3() -> None:
    result = _doctor()
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.startswith("agent-datastore: database unavailable")
    assert result.stderr.count("\n") == 1


def test_doctor_json_without_a_database_prints_unhealthy_with_the_error() -> None:
    result = _doctor("--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report == {"healthy": False, "error": report["error"]}
    # the error is the line text mode prints, and nothing else of the database
    assert result.stderr == f"agent-datastore: {report['error']}\n"
    assert report["error"].startswith("database unavailable")
    assert report["error"] == _doctor().stderr.removeprefix("agent-datastore: ").rstrip("\n")


def test_doctor_json_when_the_database_refuses_prints_the_error_and_exits_4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*_args: object, **_kwargs: object) -> None:
        raise DataStoreError("database error (OperationFailure: not authorized)")

    monkeypatch.setattr(admin, "doctor", refused)
    result = CliRunner().invoke(cli, ["--uri", "mongomock://", "doctor", "--json"])
    assert result.exit_code == 4
    assert json.loads(result.stdout) == {
        "healthy": False,
        "error": "database error (OperationFailure: not authorized)",
    }
    assert result.stderr == "agent-datastore: database error (OperationFailure: not authorized)\n"


def test_doctor_json_prints_json_for_a_uri_that_is_not_one() -> None:
    result = CliRunner().invoke(cli, ["--uri", "notascheme://x", "doctor", "--json"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert report["error"] in result.stderr
