"""``agent-datastore delete USER AGENT KEY...``: it looks first, reports the keys that do not
exist, asks only when something does, then deletes with ``delete_many``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

import agent_datastore
from agent_datastore import DataStore, admin
from agent_datastore.cli import cli

from .helpers import MovableClock


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def store(clock: MovableClock) -> Iterator[DataStore]:
    with agent_datastore.connect("mongomock://", clock=clock) as embedded:
        ada = embedded.proxy("ada", "indexer")
        ada.set_many({"config": {"timeout": 30}, "files:a": 1, "files:b": 2})
        ada.use_namespace("cache").set("config", "cached")
        embedded.proxy("bob", "indexer").set("config", [1, 2, 3])
        yield embedded


@pytest.fixture
def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent_datastore.cli._base._on_terminal", lambda: True)


def run(store: DataStore, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), obj={"store": store}, input=input)


def keys_of(store: DataStore, user: str = "ada", namespace: str = "default") -> list[str]:
    return store.proxy(user, "indexer", namespace).list_keys()


def test_delete_of_several_keys_reports_the_missing_ones_and_deletes_the_rest(
    store: DataStore,
) -> None:
    result = run(store, "delete", "ada", "indexer", "files:a", "nope", "config", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted 2 items: 'files:a', 'config'\n"
    assert result.stderr == "agent-datastore: no key 'nope' in ada/indexer/default\n"
    assert keys_of(store) == ["files:b"]
    # the same key elsewhere is untouched
    assert keys_of(store, namespace="cache") == ["config"]
    assert keys_of(store, user="bob") == ["config"]


def test_delete_of_keys_that_do_not_exist_asks_nothing_and_exits_1(
    store: DataStore, on_a_terminal: None
) -> None:
    before = admin.count_items(store)
    one = run(store, "delete", "ada", "indexer", "nope", input="y\n")
    assert one.exit_code == 1
    assert one.stderr == "agent-datastore: no key 'nope' in ada/indexer/default\n"
    several = run(store, "delete", "ada", "indexer", "nope", "gone", "nope", input="y\n")
    assert several.exit_code == 1
    assert several.stderr == "agent-datastore: no keys 'nope', 'gone' in ada/indexer/default\n"
    assert "[y/N]" not in one.stderr + several.stderr
    assert admin.count_items(store) == before


def test_off_a_terminal_a_missing_key_is_not_found_rather_than_refused(store: DataStore) -> None:
    # nothing to delete, so nothing to confirm: not the usage error of a missing --yes
    result = run(store, "delete", "ada", "indexer", "nope")
    assert result.exit_code == 1
    assert "no key 'nope'" in result.stderr
    assert "--yes" not in result.stderr


@pytest.mark.parametrize(
    ("answer", "exit_code", "left"), [("y\n", 0, ["files:b"]), ("n\n", 1, None)]
)
def test_the_question_names_how_many_items_and_which(
    store: DataStore, on_a_terminal: None, answer: str, exit_code: int, left: list[str] | None
) -> None:
    before = keys_of(store)
    result = run(store, "delete", "ada", "indexer", "config", "nope", "files:a", input=answer)
    assert result.exit_code == exit_code
    assert "agent-datastore: no key 'nope' in ada/indexer/default" in result.stderr
    question = "Delete 2 items from ada/indexer/default: 'config', 'files:a'? [y/N]"
    assert question in result.stderr
    assert keys_of(store) == (before if left is None else left)


def test_a_long_question_names_ten_keys_and_counts_the_rest(
    store: DataStore, on_a_terminal: None
) -> None:
    keys = [f"k{i:02d}" for i in range(25)]
    store.proxy("ada", "indexer").set_many(dict.fromkeys(keys, 0))
    result = run(store, "delete", "ada", "indexer", *keys, input="n\n")
    assert result.exit_code == 1
    named = ", ".join(repr(key) for key in keys[:10])
    assert f"Delete 25 items from ada/indexer/default: {named} and 15 more? [y/N]" in result.stderr
    assert len(keys_of(store)) == 28


def test_json_reports_deleted_and_missing(store: DataStore) -> None:
    result = run(store, "delete", "ada", "indexer", "config", "nope", "config", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": 1, "missing": ["nope"]}
    nothing = run(store, "delete", "ada", "indexer", "config", "--yes", "--json")
    assert nothing.exit_code == 1
    assert json.loads(nothing.stdout) == {"deleted": 0, "missing": ["config"]}


def test_an_expired_item_counts_as_missing(store: DataStore, clock: MovableClock) -> None:
    store.proxy("ada", "indexer").set("session", 1, ttl=1)
    clock.advance(2)
    result = run(store, "delete", "ada", "indexer", "session", "--yes", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"deleted": 0, "missing": ["session"]}


def test_bad_keys_are_a_usage_error(store: DataStore) -> None:
    before = admin.count_items(store)
    result = run(store, "delete", "ada", "indexer", "config", "", "--yes")
    assert result.exit_code == 2
    assert "key must not be empty" in result.stderr
    assert run(store, "delete", "ada", "indexer").exit_code == 2  # at least one key
    assert admin.count_items(store) == before


def test_keys_deleted_by_someone_else_after_the_look_are_reported(
    store: DataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if "gone" had existed when the command looked, and was deleted before it deleted
    monkeypatch.setattr(admin, "existing_keys", lambda _store, _u, _a, keys, _ns: list(keys))
    some = run(store, "delete", "ada", "indexer", "config", "gone", "--yes")
    assert some.exit_code == 0
    assert some.stdout == "deleted 1 item of 'config', 'gone'; the rest were gone\n"
    none = run(store, "delete", "ada", "indexer", "gone", "--yes", "--json")
    assert none.exit_code == 1
    assert json.loads(none.stdout) == {"deleted": 0, "missing": []}
