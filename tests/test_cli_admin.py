"""The admin commands, driven in-process against the embedded store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import agent_datastore
from agent_datastore import DataStore, admin
from agent_datastore.cli import cli

from .helpers import MovableClock


@pytest.fixture
def store() -> Iterator[DataStore]:
    with agent_datastore.connect("mongomock://") as embedded:
        ada = embedded.proxy("ada", "indexer")
        ada.set_many({"config": {"timeout": 30}, "files:a": 1, "files:b": 2}, metadata={"v": 1})
        ada.use_namespace("cache").set("k", "x" * 500)
        embedded.proxy("ada", "search").set("k", None)
        embedded.proxy("bob", "indexer").set("k", [1, 2, 3])
        yield embedded


def run(store: DataStore, *args: str, input: str | None = None) -> Result:
    # the store is handed over in the context object, so every command sees the same data
    return CliRunner().invoke(cli, list(args), obj={"store": store}, input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.stderr)
    return result.stdout


def test_users_agents_namespaces_keys(store: DataStore) -> None:
    assert ok(run(store, "users")) == "ada\nbob\n"
    assert ok(run(store, "agents", "ada")) == "indexer\nsearch\n"
    assert ok(run(store, "namespaces", "ada", "indexer")) == "cache\ndefault\n"
    assert ok(run(store, "keys", "ada", "indexer")) == "config\nfiles:a\nfiles:b\n"
    assert ok(run(store, "keys", "ada", "indexer", "--prefix", "files:", "--limit", "1")) == (
        "files:a\n"
    )
    assert json.loads(ok(run(store, "keys", "ada", "indexer", "-n", "cache", "--json"))) == ["k"]


def test_get_shows_an_item_and_exits_1_when_missing(store: DataStore) -> None:
    text = ok(run(store, "get", "ada", "indexer", "config"))
    assert 'metadata:   {"v": 1}' in text
    assert '"timeout": 30' in text
    assert "bytes" in text
    shown = json.loads(ok(run(store, "get", "ada", "indexer", "config", "--json")))
    assert shown["value"] == {"timeout": 30}
    assert shown["createdAt"].endswith("Z")
    assert shown["size"] > 100
    missing = run(store, "get", "ada", "indexer", "nope")
    assert missing.exit_code == 1
    assert "no key 'nope'" in missing.stderr


def test_stats_is_answered_by_aggregation(store: DataStore) -> None:
    summary = json.loads(ok(run(store, "stats", "--json", "--top", "2")))
    assert (summary["documents"], summary["users"], summary["agents"], summary["namespaces"]) == (
        6,
        2,
        3,
        4,
    )
    assert summary["largest_users"][0]["userId"] == "ada"
    assert len(summary["largest_namespaces"]) == 2
    assert summary["size"] == sum(g["size"] for g in admin.stats(store, 10)["largest_users"])
    assert "largest namespaces:" in ok(run(store, "stats"))


def test_set_parses_json_and_rejects_bad_input(store: DataStore) -> None:
    ok(run(store, "set", "ada", "indexer", "new", '{"a": [1, 2]}', "-m", '{"by": "cli"}'))
    assert store.proxy("ada", "indexer").get("new") == {"a": [1, 2]}
    bad_json = run(store, "set", "ada", "indexer", "k", "{not json")
    assert bad_json.exit_code == 2
    assert "VALUE is not valid JSON" in bad_json.stderr
    bad_meta = run(store, "set", "ada", "indexer", "k", "1", "-m", '{"a.b": 1}')
    assert bad_meta.exit_code == 2
    assert "metadata name 'a.b'" in bad_meta.stderr


def test_destructive_commands_need_yes_off_a_terminal(store: DataStore) -> None:
    before = admin.count_items(store)
    for args in (
        ["delete", "ada", "indexer", "config"],
        ["clear", "ada", "indexer", "--namespace", "default"],
        ["purge", "ada"],
    ):
        refused = run(store, *args)
        assert refused.exit_code == 2
        assert "without --yes" in refused.stderr
    assert admin.count_items(store) == before


def test_delete_clear_and_purge_report_what_they_removed(store: DataStore) -> None:
    assert ok(run(store, "delete", "ada", "indexer", "config", "--yes")) == (
        "deleted 1 item: 'config'\n"
    )
    assert run(store, "delete", "ada", "indexer", "config", "--yes").exit_code == 1
    assert json.loads(
        ok(run(store, "clear", "ada", "indexer", "-n", "default", "-y", "--json"))
    ) == {"deleted": 2}
    assert ok(run(store, "purge", "ada", "search", "--yes")) == (
        "erased 1 item of user 'ada', agent 'search'\n"
    )
    assert ok(run(store, "purge", "ada", "--yes")) == "erased 1 item of user 'ada'\n"
    assert admin.users(store) == ["bob"]


def test_export_then_import_gives_back_an_identical_store(store: DataStore, tmp_path: Path) -> None:
    awkward = store.proxy("ada", "odd", "n\x00s")
    awkward.set("k.$", {"a.b": 2**70, "$x": [1.5, None, "é"]}, metadata={"cost$": {"$": 1}})
    dump = tmp_path / "items.jsonl"
    assert ok(run(store, "export", "-o", str(dump))) == f"exported 7 items to {dump}\n"
    exported = list(admin.export_items(store))

    with agent_datastore.connect("mongomock://") as target:
        for _ in range(2):  # importing twice gives the same state
            assert ok(run(target, "import", str(dump))) == "imported 7 items, rejected 0 lines\n"
            assert list(admin.export_items(target)) == exported
            assert admin.count_items(target) == 7
        assert target.proxy("ada", "odd", "n\x00s").get("k.$") == {
            "a.b": 2**70,
            "$x": [1.5, None, "é"],
        }


def test_export_of_one_scope(store: DataStore, tmp_path: Path) -> None:
    dump = tmp_path / "ada.jsonl"
    ok(run(store, "export", "ada", "indexer", "cache", "-o", str(dump)))
    (line,) = dump.read_text().splitlines()
    record = json.loads(line)
    assert (record["userId"], record["agentName"], record["namespace"], record["key"]) == (
        "ada",
        "indexer",
        "cache",
        "k",
    )


def test_import_reports_bad_lines_by_number_and_keeps_the_good(
    store: DataStore, tmp_path: Path
) -> None:
    good: dict[str, Any] = next(admin.export_items(store, "bob"))
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "key": ""}),
        "",
        json.dumps({**good, "key": "second"}),
        json.dumps({**good, "value": float("nan")}),
        json.dumps({k: v for k, v in good.items() if k != "createdAt"}),
        json.dumps({**good, "key": "third", "metadata": {"a.b": 1}}),
    ]
    dump = tmp_path / "mixed.jsonl"
    dump.write_text("\n".join(lines) + "\n")
    with agent_datastore.connect("mongomock://") as target:
        result = run(target, "import", str(dump))
        assert result.exit_code == 4
        assert result.stdout == "imported 2 items, rejected 5 lines\n"
        rejected = [re.search(r"\.jsonl:(\d+): ", line)[1] for line in result.stderr.splitlines()]
        assert rejected == ["2", "3", "6", "7", "8"]
        assert target.proxy("bob", "indexer").list_keys() == ["k", "second"]


def test_doctor_reports_health_and_broken_documents(store: DataStore) -> None:
    ok(run(store, "ensure-indexes"))
    report = json.loads(ok(run(store, "doctor", "--json")))
    assert report["healthy"] is True
    assert report["unique_index"] == "userId_1_agentName_1_namespace_1_key_1"
    assert report["documents"] == 6
    store.collection.insert_one({"userId": 7, "key": "broken"})
    unhealthy = run(store, "doctor")
    assert unhealthy.exit_code == 1
    assert "invalid documents: 1" in unhealthy.stdout
    assert "broken" in unhealthy.stdout


def test_doctor_reports_a_missing_index() -> None:
    with agent_datastore.connect("mongomock://") as empty:
        result = run(empty, "doctor")
    assert result.exit_code == 1
    assert "MISSING (run ensure-indexes)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["users"],
        ["agents", "ada"],
        ["namespaces", "ada", "indexer"],
        ["keys", "ada", "indexer"],
        ["get", "ada", "indexer", "config"],
        ["stats"],
        ["set", "ada", "indexer", "k", "1"],
        ["delete", "ada", "indexer", "config", "--yes"],
        ["clear", "ada", "indexer", "-n", "cache", "--yes"],
        ["purge", "bob", "--yes"],
        ["doctor"],
        ["ensure-indexes"],
        ["demo"],
    ],
    ids=lambda args: args[0],
)
def test_every_command_has_json_output(store: DataStore, args: list[str]) -> None:
    store.ensure_indexes()
    result = run(store, *args, "--json")
    assert result.exit_code == 0, result.stderr
    json.loads(result.stdout)


def test_without_a_uri_the_embedded_store_is_used_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENT_DATASTORE_URI", raising=False)
    result = CliRunner().invoke(cli, ["users"])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "nothing persists" in result.stderr


@pytest.mark.parametrize(
    ("answer", "exit_code", "left"), [("y\n", 0, 5), ("n\n", 1, 6), ("\n", 1, 6)]
)
def test_on_a_terminal_destructive_commands_ask_first(
    store: DataStore, monkeypatch: pytest.MonkeyPatch, answer: str, exit_code: int, left: int
) -> None:
    monkeypatch.setattr("agent_datastore.cli._base._on_terminal", lambda: True)
    result = run(store, "delete", "ada", "indexer", "config", input=answer)
    assert result.exit_code == exit_code
    assert "Delete 'config' from ada/indexer/default? [y/N]" in result.stderr
    assert admin.count_items(store) == left


def test_export_to_standard_output(store: DataStore) -> None:
    lines = ok(run(store, "export", "bob", "-o", "-")).splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["k"]


def test_an_agent_needs_its_user_and_limits_are_checked(store: DataStore) -> None:
    assert run(store, "keys", "ada", "indexer", "--limit", "0").exit_code == 2
    assert run(store, "purge", "", "--yes").exit_code == 2
    assert admin.count_items(store) == 6


def test_export_skips_and_reports_documents_that_are_not_json(
    store: DataStore, tmp_path: Path
) -> None:
    from bson import ObjectId

    store.collection.insert_one(
        {
            "userId": "ada",
            "agentName": "indexer",
            "namespace": "default",
            "key": "zz",
            "value": ObjectId(),
        }
    )
    dump = tmp_path / "items.jsonl"
    result = run(store, "export", "-o", str(dump))
    assert result.exit_code == 4
    assert result.stdout == f"exported 6 items to {dump}, skipped 1\n"
    assert "skipped ada/indexer/default/zz: cannot be exported (TypeError" in result.stderr
    assert len(dump.read_text().splitlines()) == 6


def test_file_problems_are_one_line_errors(store: DataStore, tmp_path: Path) -> None:
    missing = run(store, "import", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    unwritable = run(store, "export", "-o", str(tmp_path / "no-such-dir" / "x.jsonl"))
    assert unwritable.exit_code == 2
    assert unwritable.stderr.startswith("agent-datastore: No such file or directory: ")
    assert "Traceback" not in unwritable.stderr + missing.stderr


def test_a_line_that_is_not_utf8_is_rejected_and_the_rest_imported(
    store: DataStore, tmp_path: Path
) -> None:
    lines = [json.dumps(record).encode() for record in admin.export_items(store)]
    dump = tmp_path / "mixed.jsonl"
    dump.write_bytes(lines[0] + b"\n" + b'{"key": "\xff"}\n' + b"\n".join(lines[1:]) + b"\n")
    with agent_datastore.connect("mongomock://") as target:
        result = run(target, "import", str(dump), "--json")
        assert result.exit_code == 4
        report = json.loads(result.stdout)
        assert report["imported"] == 6
        # the summary counts rejected lines; each is streamed on stderr as one JSON object
        assert report["rejected"] == 1
        rejected = [json.loads(line) for line in result.stderr.splitlines()]
        assert [r["line"] for r in rejected] == [2]
        assert "utf-8" in rejected[0]["reason"]


def test_doctor_counts_arrays_where_strings_or_dates_belong(store: DataStore) -> None:
    store.ensure_indexes()
    store.collection.insert_one(
        {
            "userId": ["x", "y"],
            "agentName": "a",
            "namespace": "n",
            "key": "k",
            "value": 1,
            "metadata": [{}],
            "createdAt": [store.collection.find_one({})["createdAt"]],
            "updatedAt": store.collection.find_one({})["updatedAt"],
        }
    )
    report = json.loads(run(store, "doctor", "--json").stdout)
    assert report["invalid_documents"] == 1
    assert report["healthy"] is False


def test_stats_text_survives_documents_missing_fields(store: DataStore) -> None:
    store.collection.insert_one({"userId": "ghost", "key": "k", "value": 1})
    text = ok(run(store, "stats"))
    assert "(missing)" in text


def test_a_bad_uri_is_a_one_line_usage_error() -> None:
    result = CliRunner().invoke(cli, ["--uri", "mongodb://", "users"])
    assert result.exit_code == 2
    assert result.stderr.startswith("agent-datastore: invalid MongoDB URI or option")
    assert result.stderr.count("\n") == 1


def test_an_unexpected_failure_is_one_line_with_exit_5(
    store: DataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_store: DataStore) -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(admin, "users", broken)
    result = run(store, "users")
    assert result.exit_code == 5
    assert result.stderr == "agent-datastore: internal error: RuntimeError: boom\n"


def test_dates_of_any_year_export_and_import_back(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    with agent_datastore.connect("mongomock://") as source:
        source.proxy("u", "a").set("k", 1)
        early = datetime(500, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)
        source.collection.update_one({"key": "k"}, {"$set": {"createdAt": early}})
        (record,) = admin.export_items(source)
        assert record["createdAt"] == "0500-01-02T03:04:05.006Z"
        dump = tmp_path / "early.jsonl"
        dump.write_text(json.dumps(record) + "\n")
        with agent_datastore.connect("mongomock://") as target:
            ok(run(target, "import", str(dump)))
            assert list(admin.export_items(target)) == [record]


def test_ctrl_c_exits_130(store: DataStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_store: DataStore) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(admin, "users", interrupted)
    result = run(store, "users")
    assert result.exit_code == 130
    assert result.stderr == "agent-datastore: interrupted\n"


@pytest.mark.parametrize(
    ("fields", "invalid"),
    [
        ({"version": "3"}, 1),
        ({"version": 0}, 1),
        ({"version": [1]}, 1),
        ({"version": 2**40}, 0),
        ({"expiresAt": "2026-01-01"}, 1),
        ({"expiresAt": None}, 0),  # read as "does not expire"
        ({}, 0),  # written before versions and expiry existed
    ],
)
def test_doctor_checks_version_and_expiry_fields(
    store: DataStore, fields: dict[str, Any], invalid: int
) -> None:
    store.ensure_indexes()
    now = store.now()
    scope = {"userId": "x", "agentName": "a", "namespace": "n", "key": "k"}
    store.collection.insert_one(
        {**scope, "value": 1, "metadata": {}, "createdAt": now, "updatedAt": now, **fields}
    )
    report = json.loads(run(store, "doctor", "--json").stdout)
    assert report["invalid_documents"] == invalid
    assert report["healthy"] is (invalid == 0)


def test_doctor_reports_a_missing_ttl_index(store: DataStore) -> None:
    store.ensure_indexes()
    store.collection.drop_index("expiresAt_1")
    result = run(store, "doctor")
    assert result.exit_code == 1
    assert "ttl index:         MISSING (run ensure-indexes)" in result.stdout


def test_get_shows_version_and_expiry_and_marks_an_expired_item() -> None:
    clock = MovableClock()
    store = agent_datastore.connect("mongomock://", clock=clock)
    proxy = store.proxy("ada", "indexer")
    proxy.set("config", {"timeout": 30})
    proxy.set("config", {"timeout": 31})
    proxy.set("session", 1, ttl=60)
    clock.advance(61)  # expired, but not yet deleted
    text = ok(run(store, "get", "ada", "indexer", "config"))
    assert "version:    2\nexpiresAt:  never\n" in text
    expired = ok(run(store, "get", "ada", "indexer", "session"))
    assert "(expired: no agent sees it; the server deletes it soon)" in expired
    shown = json.loads(ok(run(store, "get", "ada", "indexer", "session", "--json")))
    assert shown["expired"] is True
    assert shown["expiresAt"].endswith("Z")
