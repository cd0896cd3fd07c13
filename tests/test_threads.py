"""A proxy shared across threads: no exception, no lost or duplicated item."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent_datastore import AgentDataStoreProxy, DataStore

from .helpers import documents


def test_threads_sharing_one_proxy_keep_one_document_per_key(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    keys = [f"k{i}" for i in range(10)]
    barrier = threading.Barrier(8)

    def worker(worker_id: int) -> None:
        barrier.wait()
        for round_ in range(15):
            key = keys[(worker_id + round_) % len(keys)]
            data_store.set(key, {"by": worker_id, "round": round_}, metadata={"w": worker_id})
            data_store.set_many(dict.fromkeys(keys[:3], worker_id))
            assert data_store.get(key) is not None
            data_store.get_many(keys)
            data_store.list_keys(prefix="k")
            data_store.use_namespace(f"ns{worker_id % 2}").set(key, round_)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker, i) for i in range(8)]:
            future.result()  # re-raises any worker's exception

    docs = documents(store)
    seen: dict[Any, int] = {}
    for doc in docs:
        scope = (doc["namespace"], doc["key"])
        seen[scope] = seen.get(scope, 0) + 1
    assert all(count == 1 for count in seen.values())
    assert sorted(data_store.list_keys()) == keys
    assert data_store.list_namespaces() == ["default", "ns0", "ns1"]
