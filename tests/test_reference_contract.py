"""Every method, note, error-table row and example of the API reference
(shared/spec/data-store-api.md), on every backend of the ``store`` fixture."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from agent_datastore import (
    AgentDataStoreProxy,
    AsyncAgentDataStoreProxy,
    AsyncRemoteDataStoreProxy,
    DataStore,
    HTTPException,
    RemoteDataStoreProxy,
)

from .helpers import documents
from .twins import unwrapped

# ---------------------------------------------------------------------------------------- get


def test_get_of_a_missing_key_returns_none(data_store: AgentDataStoreProxy) -> None:
    assert data_store.get("my-key") is None


def test_get_returns_the_stored_value(data_store: AgentDataStoreProxy) -> None:
    data_store.set("my-key", {"a": [1, 2.5, "x", True, None]})
    assert data_store.get("my-key") == {"a": [1, 2.5, "x", True, None]}


def test_get_with_default_returns_the_default_only_when_missing(
    data_store: AgentDataStoreProxy,
) -> None:
    fallback = {"timeout": 30}
    assert data_store.get("config", default=fallback) is fallback
    data_store.set("config", {"timeout": 5})
    assert data_store.get("config", default=fallback) == {"timeout": 5}
    assert data_store.get("config", {"timeout": 30}) == {"timeout": 5}


def test_get_as_an_existence_check(data_store: AgentDataStoreProxy) -> None:
    assert not data_store.get("processed-flag")
    data_store.set("processed-flag", True)
    assert data_store.get("processed-flag")


def test_stored_null_is_a_value_even_with_a_default(data_store: AgentDataStoreProxy) -> None:
    data_store.set("nothing", None)
    assert data_store.get("nothing", default="fallback") is None
    assert data_store.list_keys() == ["nothing"]


def test_falsy_values_are_returned_not_the_default(data_store: AgentDataStoreProxy) -> None:
    for key, value in {"zero": 0, "false": False, "empty": "", "list": [], "dict": {}}.items():
        data_store.set(key, value)
        assert data_store.get(key, default="fallback") == value
        assert type(data_store.get(key, default="fallback")) is type(value)


# ---------------------------------------------------------------------------------------- set


def test_set_returns_none_and_stores(data_store: AgentDataStoreProxy) -> None:
    result = data_store.set("result", {"score": 95, "passed": True})  # type: ignore[func-returns-value]
    assert result is None
    assert data_store.get("result") == {"score": 95, "passed": True}


def test_set_with_metadata_stores_it(data_store: AgentDataStoreProxy, store: DataStore) -> None:
    report_data = {"pages": 3}
    data_store.set(
        "report",
        report_data,
        metadata={"version": "1.0", "generated_by": "analyzer-v2", "expires": "2026-03-01"},
    )
    (doc,) = documents(store)
    assert doc["metadata"] == {
        "version": "1.0",
        "generated_by": "analyzer-v2",
        "expires": "2026-03-01",
    }
    assert data_store.get("report") == report_data


def test_set_overwrites_an_existing_value(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", {"old": True, "nested": {"a": 1}})
    data_store.set("k", [1, 2])
    assert data_store.get("k") == [1, 2]
    assert len(documents(store)) == 1


def test_metadata_is_merged_on_update(data_store: AgentDataStoreProxy, store: DataStore) -> None:
    data_store.set("report", 1, metadata={"version": "1.0", "generated_by": "analyzer-v2"})
    data_store.set("report", 2, metadata={"version": "2.0", "reviewed": True})
    data_store.set("report", 3)
    data_store.set("report", 4, metadata={})
    (doc,) = documents(store)
    assert doc["value"] == 4
    assert doc["metadata"] == {"version": "2.0", "generated_by": "analyzer-v2", "reviewed": True}


def test_metadata_merges_top_level_names_only(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", 1, metadata={"source": {"repo": "a", "commit": "1"}})
    data_store.set("k", 1, metadata={"source": {"repo": "b"}})
    (doc,) = documents(store)
    assert doc["metadata"] == {"source": {"repo": "b"}}


def test_metadata_names_may_hold_dollar_signs_and_unicode(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", 1, metadata={"cost$": 1, "a$b": {"x": 2}, "é": None})
    data_store.set("k", 2, metadata={"cost$": 3})
    data_store.set_many({"j": 1}, metadata={"x$": 1})
    docs = {doc["key"]: doc for doc in documents(store)}
    assert docs["k"]["metadata"] == {"cost$": 3, "a$b": {"x": 2}, "é": None}
    assert docs["j"]["metadata"] == {"x$": 1}


def test_a_new_item_without_metadata_has_empty_metadata(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", 1)
    (doc,) = documents(store)
    assert doc["metadata"] == {}


def test_document_has_exactly_the_documented_fields(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", {"v": 1}, metadata={"m": 1})
    (doc,) = store.collection.find({})
    assert set(doc) == {
        "_id",
        "userId",
        "agentName",
        "namespace",
        "key",
        "value",
        "metadata",
        "createdAt",
        "updatedAt",
        "version",
    }
    assert (doc["userId"], doc["agentName"], doc["namespace"], doc["key"]) == (
        "user-1",
        "agent-a",
        "default",
        "k",
    )


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def test_timestamps_are_managed_automatically(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    data_store.set("k", 1)
    (first,) = documents(store)
    created = _as_utc(first["createdAt"])
    assert isinstance(first["createdAt"], datetime)
    assert first["createdAt"] == first["updatedAt"]
    assert before <= created <= datetime.now(timezone.utc)

    time.sleep(0.01)  # timestamps have millisecond precision
    data_store.set("k", 2, metadata={"m": 1})
    (second,) = documents(store)
    assert _as_utc(second["createdAt"]) == created
    assert _as_utc(second["updatedAt"]) > created


def test_set_many_and_set_share_the_timestamp_rules(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("a", 1)
    (first,) = documents(store)
    time.sleep(0.01)
    data_store.set_many({"a": 2, "b": 3})
    docs = {doc["key"]: doc for doc in documents(store)}
    assert docs["a"]["createdAt"] == first["createdAt"]
    assert docs["a"]["updatedAt"] > first["updatedAt"]
    assert docs["b"]["createdAt"] == docs["b"]["updatedAt"]


# ------------------------------------------------------------------------------------- delete


def test_delete_returns_true_then_false(data_store: AgentDataStoreProxy) -> None:
    data_store.set("temporary-data", [1])
    assert data_store.delete("temporary-data") is True
    assert data_store.get("temporary-data") is None
    assert data_store.delete("temporary-data") is False


def test_delete_example_prints_each_branch(
    data_store: AgentDataStoreProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    data_store.set("temporary-data", "x")
    for _ in range(2):
        deleted = data_store.delete("temporary-data")
        if deleted:
            print("Cleaned up temporary data")
        else:
            print("Key didn't exist")
    assert capsys.readouterr().out == "Cleaned up temporary data\nKey didn't exist\n"


def test_delete_leaves_other_keys(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"a": 1, "b": 2})
    assert data_store.delete("a")
    assert data_store.list_keys() == ["b"]


# ---------------------------------------------------------------------------------- list_keys


def test_list_keys_example(data_store: AgentDataStoreProxy) -> None:
    for key in ["status", "analysis:file2", "config", "analysis:file1"]:
        data_store.set(key, key)
    assert data_store.list_keys() == ["analysis:file1", "analysis:file2", "config", "status"]
    assert data_store.list_keys(prefix="analysis:") == ["analysis:file1", "analysis:file2"]


def test_list_keys_is_sorted_by_code_point(data_store: AgentDataStoreProxy) -> None:
    keys = ["b", "B", "a", "é", "Z", "aa", "a b", "😀", "ａ", "10", "9", "_", "~"]
    data_store.set_many(dict.fromkeys(keys, 1))
    assert data_store.list_keys() == sorted(keys)


def test_list_keys_of_an_empty_namespace_is_empty(data_store: AgentDataStoreProxy) -> None:
    assert data_store.list_keys() == []
    assert data_store.list_keys(prefix="x") == []


def test_list_keys_empty_prefix_means_all(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"a": 1, "b": 2})
    assert data_store.list_keys(prefix="") == ["a", "b"]
    assert data_store.list_keys(None) == ["a", "b"]


@pytest.mark.parametrize(
    "prefix",
    [".", ".*", "a.", "a|b", "[a]", "(", ")", "\\", "^", "$", "a+", "a?", "{1}", "\n", "*", "é"],
)
def test_list_keys_prefix_is_literal(data_store: AgentDataStoreProxy, prefix: str) -> None:
    keys = [
        prefix,
        prefix + "x",
        "x" + prefix,
        "a",
        "ab",
        "b",
        "a.b",
        "[a]b",
        "\\x",
        "^a",
        "$",
        "\nx",
        "é",
    ]
    data_store.set_many(dict.fromkeys(keys, 1))
    expected = sorted({key for key in keys if key.startswith(prefix)})
    assert data_store.list_keys(prefix=prefix) == expected


def test_list_keys_prefix_with_nul_and_newline(data_store: AgentDataStoreProxy) -> None:
    keys = ["a\x00b", "a\x00", "a", "a\nb", "b\na", "ab"]
    data_store.set_many(dict.fromkeys(keys, 1))
    assert data_store.list_keys(prefix="a\x00") == ["a\x00", "a\x00b"]
    assert data_store.list_keys(prefix="a\n") == ["a\nb"]
    assert data_store.list_keys(prefix="a") == sorted(k for k in keys if k.startswith("a"))


def test_list_keys_prefix_is_case_sensitive(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"Report": 1, "report": 2, "REPORT": 3})
    assert data_store.list_keys(prefix="rep") == ["report"]


# ---------------------------------------------------------------------------- list_namespaces


def test_list_namespaces_example(data_store: AgentDataStoreProxy) -> None:
    for namespace in ["default", "files:repo-a", "files:repo-b", "cache:api"]:
        data_store.use_namespace(namespace).set("k", 1)
    namespaces = data_store.list_namespaces()
    assert namespaces == ["cache:api", "default", "files:repo-a", "files:repo-b"]
    file_namespaces = [ns for ns in namespaces if ns.startswith("files:")]
    assert file_namespaces == ["files:repo-a", "files:repo-b"]


def test_list_namespaces_only_lists_namespaces_with_keys(data_store: AgentDataStoreProxy) -> None:
    assert data_store.list_namespaces() == []
    other = data_store.use_namespace("other")
    assert data_store.list_namespaces() == []  # use_namespace alone creates nothing
    other.set("k", 1)
    data_store.set("k", 1)
    assert data_store.list_namespaces() == ["default", "other"]
    other.delete("k")
    assert data_store.list_namespaces() == ["default"]
    data_store.clear()
    assert data_store.list_namespaces() == []


def test_list_namespaces_is_the_same_from_any_namespace(data_store: AgentDataStoreProxy) -> None:
    data_store.set("k", 1)
    data_store.use_namespace("b").set("k", 1)
    assert data_store.use_namespace("zzz").list_namespaces() == ["b", "default"]


# ------------------------------------------------------------------------------ use_namespace


def test_use_namespace_returns_a_new_proxy_and_leaves_the_original(
    data_store: AgentDataStoreProxy,
) -> None:
    cache = data_store.use_namespace("api-cache")
    # the same kind of proxy: local or remote, synchronous or the async twin
    assert unwrapped(cache).__class__ is unwrapped(data_store).__class__
    proxies = (
        AgentDataStoreProxy,
        AsyncAgentDataStoreProxy,
        RemoteDataStoreProxy,
        AsyncRemoteDataStoreProxy,
    )
    assert isinstance(unwrapped(cache), proxies)
    assert cache is not data_store
    assert (cache.user_id, cache.agent_name, cache.namespace) == ("user-1", "agent-a", "api-cache")
    assert data_store.namespace == "default"

    user_data = {"name": "Ada"}
    cache.set("user-123", user_data)
    assert cache.get("user-123") == user_data
    assert data_store.get("user-123") is None


def test_use_namespace_with_dynamic_names(data_store: AgentDataStoreProxy) -> None:
    input_dict = {"repo": "acme/widgets"}
    repo = input_dict.get("repo")
    files = data_store.use_namespace(f"files:{repo}")
    files.set("src/main.py", "print('hi')")
    assert data_store.list_namespaces() == ["files:acme/widgets"]
    assert files.get("src/main.py") == "print('hi')"


def test_use_namespace_chained_example(data_store: AgentDataStoreProxy) -> None:
    repo = "acme/widgets"
    files = data_store.use_namespace(f"files:{repo}")
    files.set_many({"a.py": "alpha", "b.py": "beta"})

    async def summarize(content: str) -> str:
        await asyncio.sleep(0)
        return content.upper()

    async def chain() -> None:
        summaries = data_store.use_namespace(f"summary:{repo}")
        for file_key in files.list_keys():
            content = files.get(file_key)
            summary = await summarize(content)
            summaries.set(file_key, summary)

    asyncio.run(chain())
    summaries = data_store.use_namespace(f"summary:{repo}")
    assert summaries.get_many(["a.py", "b.py"]) == {"a.py": "ALPHA", "b.py": "BETA"}


# -------------------------------------------------------------------------------------- clear


def test_clear_example(data_store: AgentDataStoreProxy, capsys: pytest.CaptureFixture[str]) -> None:
    keep = data_store.use_namespace("keep")
    keep.set("k", 1)
    temp = data_store.use_namespace("temp-processing")
    temp.set("step1", {"rows": 1})
    temp.set("step2", {"rows": 2})

    deleted_count = temp.clear()
    print(f"Cleaned up {deleted_count} temporary keys")

    assert capsys.readouterr().out == "Cleaned up 2 temporary keys\n"
    assert temp.list_keys() == []
    assert temp.clear() == 0
    assert keep.get("k") == 1
    assert data_store.list_namespaces() == ["keep"]


# ----------------------------------------------------------------------------------- get_many


def test_get_many_example_omits_missing_keys(
    data_store: AgentDataStoreProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    data_store.set("file1", {"lines": 1})
    data_store.set("file2", {"lines": 2})
    results = data_store.get_many(["file1", "file2", "file3"])
    assert results == {"file1": {"lines": 1}, "file2": {"lines": 2}}
    for key, value in results.items():
        print(f"{key}: {value}")
    assert capsys.readouterr().out == "file1: {'lines': 1}\nfile2: {'lines': 2}\n"


def test_get_many_keeps_the_order_asked_and_collapses_repeats(
    data_store: AgentDataStoreProxy,
) -> None:
    data_store.set_many({"a": 1, "b": 2, "c": None})
    result = data_store.get_many(["c", "zz", "a", "c", "b"])
    assert list(result.items()) == [("c", None), ("a", 1), ("b", 2)]


def test_get_many_of_nothing_is_empty(data_store: AgentDataStoreProxy) -> None:
    data_store.set("a", 1)
    assert data_store.get_many([]) == {}
    assert data_store.get_many(["nope"]) == {}


def test_get_many_accepts_tuples_and_other_iterables(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"a": 1, "b": 2})
    assert data_store.get_many(("a", "b")) == {"a": 1, "b": 2}
    assert data_store.get_many(key for key in ["b"]) == {"b": 2}


# ----------------------------------------------------------------------------------- set_many


def test_set_many_example(
    data_store: AgentDataStoreProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    count = data_store.set_many(
        {
            "file:a.py": {"lines": 100, "functions": 5},
            "file:b.py": {"lines": 200, "functions": 10},
            "file:c.py": {"lines": 50, "functions": 2},
        }
    )
    print(f"Stored {count} files")
    assert capsys.readouterr().out == "Stored 3 files\n"
    assert data_store.get("file:b.py") == {"lines": 200, "functions": 10}


def test_set_many_with_shared_metadata(data_store: AgentDataStoreProxy, store: DataStore) -> None:
    data_store.set("file:a.py", 0, metadata={"owner": "ada"})
    analysis_results = {"file:a.py": {"ok": True}, "file:b.py": {"ok": False}}
    assert (
        data_store.set_many(
            analysis_results, metadata={"batch_id": "batch-123", "analyzed_at": "2026-02-05"}
        )
        == 2
    )
    docs = {doc["key"]: doc for doc in documents(store)}
    assert docs["file:a.py"]["metadata"] == {
        "owner": "ada",
        "batch_id": "batch-123",
        "analyzed_at": "2026-02-05",
    }
    assert docs["file:b.py"]["metadata"] == {"batch_id": "batch-123", "analyzed_at": "2026-02-05"}
    assert data_store.get_many(list(analysis_results)) == analysis_results


def test_set_many_overwrites_and_counts_every_item(data_store: AgentDataStoreProxy) -> None:
    data_store.set("a", "old")
    assert data_store.set_many({"a": "new", "b": "b"}) == 2
    assert data_store.get_many(["a", "b"]) == {"a": "new", "b": "b"}


def test_set_many_of_nothing_stores_nothing(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    assert data_store.set_many({}) == 0
    assert documents(store) == []


# --------------------------------------------------------------------------- complete example

COMPLETE_EXAMPLE = """
async def run(input_dict: dict, tools: dict) -> dict:
    repo = input_dict.get("repo")
    query = input_dict.get("query", "")

    # Check if repo is already indexed
    namespaces = data_store.list_namespaces()
    files_ns = f"files:{repo}"

    if files_ns not in namespaces:
        return {"error": f"Repository {repo} not indexed. Run indexer first."}

    # Access the indexed files
    files = data_store.use_namespace(files_ns)
    summaries = data_store.use_namespace(f"summary:{repo}")

    # Search through summaries
    results = []
    for key in summaries.list_keys():
        summary = summaries.get(key)
        if query.lower() in str(summary).lower():
            results.append({
                "file": key,
                "summary": summary,
                "content_preview": files.get(key, {}).get("content", "")[:200]
            })

    # Cache search results
    cache = data_store.use_namespace("search-cache")
    cache.set(f"{repo}:{query}", {
        "results": results,
        "count": len(results)
    })

    return {
        "repo": repo,
        "query": query,
        "matches": len(results),
        "results": results[:10]  # Limit response size
    }
"""


def _reference_run(data_store: AgentDataStoreProxy) -> Any:
    """The reference's complete example, verbatim, with ``data_store`` injected as a global the
    way a sandbox runtime does."""
    namespace: dict[str, Any] = {"data_store": data_store}
    exec(COMPLETE_EXAMPLE, namespace)
    return namespace["run"]


def test_complete_example_reports_an_unindexed_repository(data_store: AgentDataStoreProxy) -> None:
    run = _reference_run(data_store)
    answer = asyncio.run(run({"repo": "acme/none", "query": "x"}, {}))
    assert answer == {"error": "Repository acme/none not indexed. Run indexer first."}


def test_complete_example_searches_and_caches(data_store: AgentDataStoreProxy) -> None:
    files = data_store.use_namespace("files:acme/app")
    summaries = data_store.use_namespace("summary:acme/app")
    files.set_many({f"f{i}.py": {"content": f"content {i} " * 50} for i in range(12)})
    summaries.set_many({f"f{i}.py": f"{'Parser' if i % 2 else 'Widget'} {i}" for i in range(12)})

    run = _reference_run(data_store)
    answer = asyncio.run(run({"repo": "acme/app", "query": "parser"}, {}))

    assert answer["matches"] == 6
    assert [r["file"] for r in answer["results"]] == sorted(f"f{i}.py" for i in range(1, 12, 2))
    assert answer["results"][0]["content_preview"] == ("content 1 " * 50)[:200]
    cached = data_store.use_namespace("search-cache").get("acme/app:parser")
    assert cached["count"] == 6
    assert len(cached["results"]) == 6
    assert "search-cache" in data_store.list_namespaces()


# ---------------------------------------------------------------------------- error handling


def test_error_table_invalid_value_raises_type_error(data_store: AgentDataStoreProxy) -> None:
    some_object = object()
    try:
        data_store.set("key", some_object)
    except TypeError as e:
        outcome = {"error": f"Cannot store value: {e}"}
    assert outcome["error"].startswith("Cannot store value: ")
    assert "object" in outcome["error"]
    assert data_store.list_keys() == []


def test_error_table_database_unavailable_is_an_http_exception() -> None:
    # The closed-port tests in test_connect.py check every method; this is the table's row.
    from agent_datastore import connect

    from .helpers import closed_port

    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=200"
    with connect(uri) as unreachable, pytest.raises(HTTPException) as caught:
        unreachable.proxy("u", "a").get("k")
    assert caught.value.status_code == 503
