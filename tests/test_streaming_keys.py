"""iter_keys over 100,000 keys holds memory flat. The keys come from a stub collection (see
``tests/stub.py``): the embedded fake is quadratic at this size and no server is available."""

from __future__ import annotations

import tracemalloc

from agent_datastore import _core

from .stub import stub_store

COUNT = 100_000


def peak_bytes_while(run: object) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_100000_keys_gives_all_in_order_with_bounded_memory() -> None:
    keys = [f"item:{i:07d}" for i in range(COUNT)]
    store, stub = stub_store(keys)
    proxy = store.proxy("u", "a")
    seen = {"count": 0, "last": ""}

    def stream() -> None:
        for key in proxy.iter_keys(prefix="item:"):
            assert key > seen["last"]
            seen["last"] = key
            seen["count"] += 1

    streamed_peak = peak_bytes_while(stream)
    assert seen == {"count": COUNT, "last": keys[-1]}
    # one query per page: 100 full pages, then an empty one
    assert stub.query_count == COUNT // _core.KEY_PAGE_SIZE + 1
    first, second = stub.first_queries
    assert "$gt" not in first["key"]
    assert second["key"]["$gt"] == keys[_core.KEY_PAGE_SIZE - 1]

    listed_peak = peak_bytes_while(lambda: proxy.list_keys(prefix="item:"))
    # a page of 1,000 keys and their documents is well under a megabyte; all the keys at
    # once, many megabytes
    assert streamed_peak < 1_000_000
    assert listed_peak > 10 * streamed_peak


def test_streaming_memory_does_not_grow_with_the_number_of_keys() -> None:
    peaks = []
    for count in (10_000, 100_000):
        store, _ = stub_store([f"k{i:07d}" for i in range(count)])
        proxy = store.proxy("u", "a")
        peaks.append(peak_bytes_while(lambda p=proxy: sum(1 for _ in p.iter_keys())))
    small, large = peaks
    assert large < 2 * small
