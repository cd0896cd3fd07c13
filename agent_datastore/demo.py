"""The reference's "Complete Example", end to end, on the embedded in-memory store.

An indexer agent fills ``files:<repo>`` and ``summary:<repo>``; the search agent of the
reference then finds the files whose summary mentions the query and caches its answer in
``search-cache``. Run it with ``agent-datastore demo``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from ._store import AgentDataStoreProxy, connect

__all__ = ["SAMPLE_REPOSITORY", "index_repository", "run_demo", "search_repository"]

USER_ID = "demo-user"
AGENT_NAME = "repo-search"

SAMPLE_REPOSITORY: dict[str, str] = {
    "README.md": "# widgets\nA tiny service that reads its config and serves widgets.\n",
    "src/config.py": "import json\n\ndef load_config(path):\n    return json.load(open(path))\n",
    "src/main.py": "from config import load_config\n\ndef main():\n    load_config('w.json')\n",
    "src/widgets.py": "class Widget:\n    def render(self):\n        return '<widget/>'\n",
    "tests/test_widgets.py": "from widgets import Widget\n\ndef test_render():\n    Widget()\n",
}


def _count(number: int, singular: str, plural: str | None = None) -> str:
    """``1 line``, ``2 lines``: a count with its noun in the right number."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


async def summarize(path: str, content: str) -> str:
    """A stand-in for a model call: the file's kind, size and the names it defines."""
    await asyncio.sleep(0)
    names = [
        line.split()[1].split("(")[0].rstrip(":")
        for line in content.splitlines()
        if line.startswith(("def ", "class "))
    ]
    kind = "markdown" if path.endswith(".md") else "python"
    text = f"{kind} file, {_count(len(content.splitlines()), 'line')}"
    if names:
        text += ", defines " + ", ".join(names)
    if "config" in content:
        text += ", mentions config"
    return text


async def index_repository(
    data_store: AgentDataStoreProxy, repo: str, files: dict[str, str]
) -> dict[str, Any]:
    """The indexer agent: store each file and its summary, one namespace for each."""
    file_store = data_store.use_namespace(f"files:{repo}")
    summaries = data_store.use_namespace(f"summary:{repo}")
    file_store.set_many(
        {path: {"content": content} for path, content in files.items()},
        metadata={"repo": repo, "indexed_by": "demo-indexer"},
    )
    for file_key in file_store.list_keys():
        content = file_store.get(file_key)["content"]
        summaries.set(file_key, await summarize(file_key, content))
    return {"repo": repo, "files": len(files)}


async def search_repository(
    data_store: AgentDataStoreProxy, input_dict: dict[str, Any], tools: dict[str, Any]
) -> dict[str, Any]:
    """The reference's complete example, with ``data_store`` passed in instead of injected."""
    repo = input_dict.get("repo")
    query = input_dict.get("query", "")

    namespaces = data_store.list_namespaces()
    files_ns = f"files:{repo}"
    if files_ns not in namespaces:
        return {"error": f"Repository {repo} not indexed. Run indexer first."}

    files = data_store.use_namespace(files_ns)
    summaries = data_store.use_namespace(f"summary:{repo}")

    results = []
    for key in summaries.list_keys():
        summary = summaries.get(key)
        if query.lower() in str(summary).lower():
            results.append(
                {
                    "file": key,
                    "summary": summary,
                    "content_preview": files.get(key, {}).get("content", "")[:200],
                }
            )

    cache = data_store.use_namespace("search-cache")
    cache.set(f"{repo}:{query}", {"results": results, "count": len(results)})

    return {"repo": repo, "query": query, "matches": len(results), "results": results[:10]}


def run_demo(uri: str = "mongomock://", echo: Callable[[str], object] = print) -> dict[str, Any]:
    """Index a sample repository, search it twice and show what the store holds."""
    repo, query = "acme/widgets", "config"
    with connect(uri) as store:
        data_store = store.proxy(USER_ID, AGENT_NAME)
        echo(f"agent-datastore demo: user {USER_ID!r}, agent {AGENT_NAME!r}, store {uri}")

        files = _count(len(SAMPLE_REPOSITORY), "file")
        echo(f"\n1. The indexer stores {files} of {repo} and summaries.")
        asyncio.run(index_repository(data_store, repo, SAMPLE_REPOSITORY))
        for namespace in data_store.list_namespaces():
            keys = data_store.use_namespace(namespace).list_keys()
            echo(f"   {namespace:<24} {_count(len(keys), 'key')}: {', '.join(keys)}")

        echo(f"\n2. The search agent looks for {query!r} in the summaries of {repo}.")
        answer = asyncio.run(search_repository(data_store, {"repo": repo, "query": query}, {}))
        for result in answer["results"]:
            echo(f"   {result['file']:<24} {result['summary']}")
        echo(f"   {_count(answer['matches'], 'match', 'matches')}")

        cache = data_store.use_namespace("search-cache")
        cached = cache.get(f"{repo}:{query}")
        results = _count(cached["count"], "result")
        echo(f"\n3. Cached in 'search-cache' under {repo}:{query}: {results}.")
        echo(f"   namespaces now: {', '.join(data_store.list_namespaces())}")

        echo("\n4. Searching a repository nobody indexed:")
        missing = asyncio.run(search_repository(data_store, {"repo": "acme/unknown"}, {}))
        echo(f"   {json.dumps(missing)}")

        removed = cache.clear()
        echo(
            f"\n5. Clearing 'search-cache' removed {_count(removed, 'key')}; namespaces now: "
            f"{', '.join(data_store.list_namespaces())}"
        )
    return answer
