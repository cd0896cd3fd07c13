"""Measure how the embedded store (mongomock-ng) slows down as it fills.

Usage: python scripts/embedded_scale.py [SIZE ...]   (default sizes: 250 500 1000)

For each size: the time of each `set` while filling an empty store to that size, the time of
one `get` at that size, and the time of one `set_many` of that many more items. The fake scans
every document per query and per unique-index check, so each grows with the store's size.
"""

from __future__ import annotations

import sys
import time

import agent_datastore


def measure(size: int) -> str:
    with agent_datastore.connect("mongomock://") as store:
        data_store = store.proxy("user", "agent")
        started = time.perf_counter()
        for i in range(size):
            data_store.set(f"k{i}", {"i": i})
        per_set = (time.perf_counter() - started) / size
        started = time.perf_counter()
        for i in range(50):
            data_store.get(f"k{i}")
        per_get = (time.perf_counter() - started) / 50
        started = time.perf_counter()
        data_store.set_many({f"m{i}": i for i in range(size)})
        batch = time.perf_counter() - started
    return (
        f"{size:>6} items: set {per_set * 1000:6.2f} ms, get {per_get * 1000:6.2f} ms, "
        f"set_many({size}) {batch:6.2f} s"
    )


def main(argv: list[str]) -> None:
    for size in [int(arg) for arg in argv] or [250, 500, 1000]:
        print(measure(size), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
