"""A proxy shared across threads: no exception, no lost or duplicated item."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent_datastore import AgentDataStoreProxy, DataStore

from .helpers import documents


def test_threads_sharing_one_proxy_keep_one_document_per_key(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    keys = [f"k{i}" for i in range(10)]
    barrier = threading.Barrier(8, timeout=30)

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


def test_two_stores_racing_upserts_on_new_keys_all_succeed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two DataStores (as two runtime processes would have) over one collection, their threads
    upserting the same new keys at the same moment: every call succeeds, one item per key."""
    import time

    import mongomock_ng
    from mongomock_ng.collection import Collection

    from agent_datastore import DataStore

    insert_one = Collection.insert_one

    def slow_insert_one(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.001)  # a slow server: widens the window between lookup and insert
        return insert_one(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "insert_one", slow_insert_one)
    client = mongomock_ng.MongoClient()
    stores = [DataStore(client.app.items), DataStore(client.app.items)]
    for store in stores:
        store.ensure_indexes()
    proxies = [store.proxy("user", "agent") for store in stores]
    rounds, per_round = 20, 8
    barrier = threading.Barrier(per_round, timeout=30)  # a failing racer must not hang the rest

    def racer(index: int) -> None:
        proxy = proxies[index % 2]
        for round_ in range(rounds):
            barrier.wait()
            if index % 4 == 3:
                proxy.set_many({f"key-{round_}": index, f"other-{round_}": index})
            else:
                proxy.set(f"key-{round_}", index, metadata={f"by{index}": True})

    with ThreadPoolExecutor(per_round) as pool:
        for future in [pool.submit(racer, i) for i in range(per_round)]:
            future.result()

    keys = [doc["key"] for doc in client.app.items.find({})]
    assert sorted(keys) == sorted({*keys})  # no duplicate documents
    assert len(keys) == 2 * rounds
    metadata = client.app.items.find_one({"key": "key-0"})["metadata"]
    assert set(metadata) == {f"by{i}" for i in range(per_round) if i % 4 != 3}
