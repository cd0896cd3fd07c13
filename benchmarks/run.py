"""The benchmark: what agent-datastore costs over pymongo, and how it scales.

    python -m benchmarks.run [--quick] [--out benchmarks/results]

Writes ``results.json``, ``results.md`` and ``scaling.png`` to ``--out``: by default
``benchmarks/results``, the committed results, but with ``--quick`` a new temporary folder,
whose path it prints. Seeded; every
measurement is warmed up, then repeated, and reported as median, p90 and p99 of the repeats.
``--quick`` runs tiny sizes in seconds, for the test suite; its numbers mean nothing.

1. Layer cost: every proxy operation over a stub collection that answers at once, so only
   this package's own work is timed (checking, encoding, building the command, reading the
   reply), against the time pymongo's BSON encoder takes for the very command the operation
   sends.
2. Client path: the proxy through a real ``MongoClient`` against a wire-protocol responder
   that answers at once (``benchmarks/responder.py``, another process), against the same
   commands sent with pymongo directly, in alternating rounds of the same run; and against a
   real server when ``MONGODB_URI`` is set.
3. Scaling: ``set_many``/``get_many`` from 1 to 10,000 items and key listing from 1,000 to
   200,000 keys, on the stub and over the wire, time per item and peak memory.
4. The embedded store, at the sizes it can serve, and how its cost grows.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bson
import pymongo
from pymongo import MongoClient, UpdateOne

import agent_datastore
from agent_datastore import _core
from benchmarks.responder import Responder

SEED = 20261126
VALUE_SIZES = {"100 B": 100, "1 KB": 1024, "100 KB": 100 * 1024}
SIMPLE = {"locale": "simple"}


# ----------------------------------------------------------------------------- measuring


def measure(call: Callable[[], Any], *, number: int, repeats: int, warmup: int = 1) -> dict:
    """Microseconds per call: ``repeats`` samples, each the mean of ``number`` calls."""
    for _ in range(warmup):
        for _ in range(number):
            call()
    samples = []
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(number):
                call()
            samples.append((time.perf_counter() - started) / number * 1e6)
    finally:
        gc.enable()
    return summary(samples)


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {
        "median": statistics.median(ordered),
        "p90": quantile(0.90),
        "p99": quantile(0.99),
        "samples": len(ordered),
    }


def peak_memory(call: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def make_value(size: int, rng: random.Random) -> dict:
    """A JSON document of about ``size`` bytes: a few fields and one long text."""
    fixed = {"id": rng.randrange(10**9), "ok": True, "score": rng.random(), "tags": ["a", "b"]}
    room = max(size - len(json.dumps(fixed)) - 12, 1)
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(room))
    return {**fixed, "text": text}


# ------------------------------------------------------------------- stub (no database)


class _Deleted:
    deleted_count = 1


class InstantCollection:
    """A collection stand-in that answers every call at once and remembers the last one,
    so the benchmark can rebuild the exact command and time pymongo's encoding of it."""

    name = "items"

    def __init__(self) -> None:
        self.find_reply: list[dict] = []
        self.keys: list[str] = []
        self.one_reply: dict | None = None
        self._one_cache: dict[str, Any] = {}
        self.last: tuple[str, tuple, dict] = ("", (), {})
        self.datasets: dict[str, tuple[list[dict], list[str]]] = {}

    def with_options(self, **_: Any) -> InstantCollection:
        return self

    def _one(self, projection: dict | None) -> dict | None:
        """The stored document as the projection asks, made once per projection: a server
        sends only the projected fields, and the stub must not spend time making them. The
        cache is keyed by the projection's identity (it holds the projection, so the id is
        not reused): a ``repr`` of it cost about 2 us per call, charged to the layer."""
        if self._one_cache.get("source") is not self.one_reply:
            self._one_cache = {"source": self.one_reply}
        cached = self._one_cache.get(id(projection))
        if cached is None or cached[0] is not projection:
            cached = (projection, _projected(self.one_reply, projection))
            self._one_cache[id(projection)] = cached
        return cached[1]

    def serve(self, documents: list[dict], namespace: str | None = None) -> None:
        """Answer finds from ``documents``, sorted by key, honouring ``$gt`` and limits; with
        a ``namespace``, only finds in that namespace (the scaling sizes each have one)."""
        if namespace is not None:
            self.datasets[namespace] = (documents, [document["key"] for document in documents])
            return
        self.find_reply = documents
        self.keys = [document["key"] for document in documents]

    def create_index(self, *_: Any, **__: Any) -> str:
        return "index"

    def _remember(self, name: str, args: tuple, kwargs: dict) -> None:
        self.last = (name, args, kwargs)

    def find_one(self, *args: Any, **kwargs: Any) -> Any:
        self._remember("find_one", args, kwargs)
        return self._one(args[1] if len(args) > 1 else None)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        self._remember("find", args, kwargs)
        documents, keys = self.find_reply, self.keys
        if self.datasets and args[0].get("namespace") in self.datasets:
            documents, keys = self.datasets[args[0]["namespace"]]
        start = 0
        condition = args[0].get("key")
        if isinstance(condition, dict) and "$gt" in condition and keys:
            start = bisect.bisect_right(keys, condition["$gt"])
        limit = kwargs.get("limit") or 0
        end = min(len(documents), start + limit) if limit else len(documents)
        # no slice: a page must not cost a copy of everything after it
        return (documents[index] for index in range(start, end))

    def update_one(self, *args: Any, **kwargs: Any) -> None:
        self._remember("update_one", args, kwargs)

    def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
        self._remember("find_one_and_update", args, kwargs)
        return self._one(kwargs.get("projection"))

    def find_one_and_delete(self, *args: Any, **kwargs: Any) -> Any:
        self._remember("find_one_and_delete", args, kwargs)
        return self._one(kwargs.get("projection"))

    def delete_one(self, *args: Any, **kwargs: Any) -> _Deleted:
        self._remember("delete_one", args, kwargs)
        return _Deleted()

    def delete_many(self, *args: Any, **kwargs: Any) -> _Deleted:
        self._remember("delete_many", args, kwargs)
        return _Deleted()

    def aggregate(self, *args: Any, **kwargs: Any) -> list:
        """list_namespaces: each namespace and the expiry of its first item (none: live)."""
        self._remember("aggregate", args, kwargs)
        return [{"_id": "default", "expiresAt": None}, {"_id": "other", "expiresAt": None}]

    def bulk_write(self, *args: Any, **kwargs: Any) -> None:
        self._remember("bulk_write", args, kwargs)

    def reply_document(self) -> dict:
        """The reply pymongo would decode for the last call: what a server would send for
        its projection."""
        name, args, kwargs = self.last
        if name == "find_one":
            found = self.find_one(*args, **kwargs)
            return {"cursor": {"firstBatch": [found] if found else [], "id": 0}}
        if name == "find":
            return {"cursor": {"firstBatch": list(self.find(*args, **kwargs)), "id": 0}}
        if name in ("find_one_and_update", "find_one_and_delete"):
            return {"value": getattr(self, name)(*args, **kwargs), "ok": 1.0}
        if name == "aggregate":
            return {"cursor": {"firstBatch": self.aggregate(*args, **kwargs), "id": 0}, "ok": 1.0}
        return {"n": 1, "nModified": 1, "ok": 1.0}

    def command_document(self) -> dict:
        """The command pymongo would send for the last call (what its encoder must encode)."""
        name, args, kwargs = self.last
        collation = kwargs.get("collation")
        if name in ("find_one", "find"):
            command = {"find": "items", "filter": args[0], "projection": args[1]}
            for option in ("sort", "limit", "batch_size"):
                if kwargs.get(option):
                    command[option] = kwargs[option]
            return {**command, "collation": collation}
        if name == "update_one":
            update = {"q": args[0], "u": args[1], "upsert": kwargs.get("upsert"), "multi": False}
            return {"update": "items", "updates": [{**update, "collation": collation}]}
        if name in ("find_one_and_update", "find_one_and_delete"):
            command = {
                "findAndModify": "items",
                "query": args[0],
                "fields": kwargs.get("projection"),
            }
            if name == "find_one_and_update":
                command.update(update=args[1], upsert=kwargs.get("upsert"), new=False)
            else:
                command["remove"] = True
            return {**command, "collation": collation}
        if name in ("delete_one", "delete_many"):
            limit = 1 if name == "delete_one" else 0
            return {
                "delete": "items",
                "deletes": [{"q": args[0], "limit": limit, "collation": collation}],
            }
        if name == "aggregate":
            cursor = {"batchSize": kwargs["batchSize"]} if kwargs.get("batchSize") else {}
            return {
                "aggregate": "items",
                "pipeline": args[0],
                "cursor": cursor,
                "collation": collation,
            }
        if name == "bulk_write":
            updates = [
                {
                    "q": r._filter,
                    "u": r._doc,
                    "upsert": True,
                    "multi": False,
                    "collation": r._collation,
                }
                for r in args[0]
            ]
            return {"update": "items", "ordered": False, "updates": updates}
        raise ValueError(name)


def _projected(document: dict | None, projection: dict | None) -> dict | None:
    """``document`` as a server returns it for an inclusion ``projection`` (a computed
    ``size`` field gets a made-up number)."""
    if document is None or projection is None:
        return document
    kept = {
        name: document[name] for name, rule in projection.items() if rule == 1 and name in document
    }
    if "size" in projection:
        kept["size"] = 1234
    return kept


def stub_store() -> tuple[agent_datastore.DataStore, InstantCollection]:
    collection = InstantCollection()
    collection.database = type("Database", (), {"name": "bench"})()  # for repr only
    store = agent_datastore.DataStore(collection, ensure_indexes=False)  # type: ignore[arg-type]
    return store, collection


def layer_cost(quick: bool, rng: random.Random) -> list[dict]:
    """Each operation over the instant stub, against pymongo's encoding of its command."""
    store, collection = stub_store()
    proxy = store.proxy("user-1", "agent-a", "default")
    number, repeats = (20, 5) if quick else (200, 21)
    now = store.now()
    rows = []
    # a first pass over everything, unmeasured, so that the first rows are not the slowest
    warm = {"k": make_value(1024, rng)}
    for _ in range(3 if quick else 300):
        proxy.set("k", warm["k"]), proxy.get("k"), proxy.set_many(warm)
    for size_name, size in VALUE_SIZES.items():
        value = make_value(size, rng)
        batch = {f"key-{i:03d}": make_value(size, rng) for i in range(100 if size <= 1024 else 10)}
        stored = {"value": value, "key": "k", "createdAt": now, "updatedAt": now, "version": 3}
        listed = [{"key": f"key-{i:03d}", "value": value} for i in range(len(batch))]
        operations: list[tuple[str, Callable[[], Any], int, Callable[[], None]]] = [
            ("get", lambda: proxy.get("k"), 1, lambda: setattr(collection, "one_reply", stored)),
            ("set", lambda: proxy.set("k", value, metadata={"source": "bench"}), 1, _nothing),
            ("set ttl", lambda: proxy.set("k", value, ttl=60), 1, _nothing),
            (
                "set if_version",
                lambda: proxy.set("k", value, if_version=3),
                1,
                lambda: setattr(collection, "one_reply", stored),
            ),
            (
                "get_item",
                lambda: proxy.get_item("k"),
                1,
                lambda: setattr(collection, "one_reply", {**stored, "metadata": {"m": 1}}),
            ),
            (
                "delete",
                lambda: proxy.delete("k"),
                1,
                lambda: setattr(collection, "one_reply", stored),
            ),
            (
                "increment",
                lambda: proxy.increment("n"),
                1,
                lambda: setattr(collection, "one_reply", {"value": 41, "createdAt": now}),
            ),
            (
                "get_many",
                lambda: proxy.get_many(list(batch)),
                len(batch),
                lambda: setattr(collection, "find_reply", listed),
            ),
            ("set_many", lambda: proxy.set_many(batch), len(batch), _nothing),
        ]
        if size_name == "1 KB":
            keys = [{"key": f"key-{i:05d}"} for i in range(100)]
            page = [{"key": f"key-{i:05d}"} for i in range(1_000)]
            details = [  # as the projection returns them: no value, a computed size
                {
                    "key": f"key-{i:05d}",
                    "metadata": {"m": 1},
                    "createdAt": now,
                    "updatedAt": now,
                    "version": 2,
                    "size": 1234,
                }
                for i in range(100)
            ]
            operations += [
                (
                    "delete if_version",
                    lambda: proxy.delete("k", if_version=3),
                    1,
                    lambda: setattr(collection, "one_reply", stored),
                ),
                (
                    "list_items (100)",
                    lambda: proxy.list_items(prefix="key-"),
                    100,
                    lambda: setattr(collection, "find_reply", details),
                ),
                (
                    "iter_keys (1,000)",
                    lambda: sum(1 for _ in proxy.iter_keys(prefix="key-")),
                    1_000,
                    lambda: collection.serve(page),
                ),
                (
                    "list_keys (100)",
                    lambda: proxy.list_keys(prefix="key-"),
                    100,
                    lambda: setattr(collection, "find_reply", keys),
                ),
                ("list_namespaces", lambda: proxy.list_namespaces(), 1, _nothing),
                ("clear", lambda: proxy.clear(), 1, _nothing),
            ]
        for name, call, items, prepare in operations:
            prepare()
            call()
            command = collection.command_document()
            reply = bson.encode(collection.reply_document())
            # the three are sampled in turn, round after round, so that a burst of noise on
            # a shared machine hits all of them alike; the ratios are medians of the rounds'
            layer, encoding, decoding = [], [], []
            for _ in range(repeats):
                layer.append(measure(call, number=number, repeats=1, warmup=0)["median"])
                encoding.append(
                    measure(lambda c=command: bson.encode(c), number=number, repeats=1, warmup=0)[
                        "median"
                    ]
                )
                decoding.append(
                    measure(lambda r=reply: bson.decode(r), number=number, repeats=1, warmup=0)[
                        "median"
                    ]
                )
            rows.append(
                {
                    "operation": name,
                    "value": size_name,
                    "items": items,
                    "layer_us": summary(layer),
                    "encode_us": summary(encoding),
                    "decode_us": summary(decoding),
                    "ratio_to_encoding": statistics.median(
                        [a / b for a, b in zip(layer, encoding, strict=True)]
                    ),
                    "ratio": statistics.median(
                        [a / (b + c) for a, b, c in zip(layer, encoding, decoding, strict=True)]
                    ),
                }
            )
    return rows


def _nothing() -> None:
    return None


# ------------------------------------------------------------------------- client path

# What a user of pymongo alone writes to send the commands the store sends: the filter and the
# update pipeline built on every call (the time changes every call), as plain literals, with
# none of the store's checks. ``check_raw_commands`` holds them to the store's commands, byte
# for byte, so the comparison is of the same commands.
_RAW_LIVE = "$__ads_live"


def raw_item_filter(key: str) -> dict[str, Any]:
    return {"userId": "user-1", "agentName": "agent-a", "namespace": "default", "key": key}


def raw_live_filter(key: Any, now: datetime) -> dict[str, Any]:
    return {
        "userId": "user-1",
        "agentName": "agent-a",
        "namespace": "default",
        "key": key,
        "expiresAt": {"$not": {"$lte": now}},
    }


def raw_set_pipeline(value: Any, metadata: dict[str, Any], now: datetime) -> list[dict]:
    expired = {"$and": [{"$eq": [{"$type": "$expiresAt"}, "date"]}, {"$lte": ["$expiresAt", now]}]}
    live = {"$and": [{"$ne": [{"$type": "$createdAt"}, "missing"]}, {"$not": [expired]}]}
    stages: list[dict] = [
        {"$set": {"__ads_live": live}},
        {
            "$set": {
                "value": {"$literal": value},
                "metadata": {"$cond": [_RAW_LIVE, "$metadata", {"$literal": {}}]},
                "createdAt": {"$cond": [_RAW_LIVE, "$createdAt", now]},
                "updatedAt": now,
                "version": {"$cond": [_RAW_LIVE, {"$add": [{"$ifNull": ["$version", 1]}, 1]}, 1]},
                "expiresAt": "$$REMOVE",
            }
        },
    ]
    if metadata:
        stages.append({"$set": {"metadata." + k: {"$literal": v} for k, v in metadata.items()}})
    stages.append({"$unset": ["__ads_live"]})
    return stages


def raw_set_many(batch: dict[str, Any]) -> list[UpdateOne]:
    now = datetime.now(timezone.utc)
    return [
        UpdateOne(raw_item_filter(k), raw_set_pipeline(v, {}, now), upsert=True, collation=SIMPLE)
        for k, v in batch.items()
    ]


def check_raw_commands(scope: _core.Scope, value: Any, now: datetime) -> None:
    """The hand-written commands are the store's, byte for byte."""
    metadata = {"source": "bench"}
    write = scope.set_write("k", value, _core.check_metadata(metadata), now)
    pairs = [
        (write.filter, raw_item_filter("k")),
        ({"p": write.pipeline}, {"p": raw_set_pipeline(value, metadata, now)}),
        (scope.live_item_filter("k", now), raw_live_filter("k", now)),
        (scope.many_filter(["a", "b"], now), raw_live_filter({"$in": ["a", "b"]}, now)),
    ]
    plain = scope.set_write("k", value, _core.check_metadata(None), now)
    pairs.append(({"p": plain.pipeline}, {"p": raw_set_pipeline(value, {}, now)}))
    for ours, theirs in pairs:
        if bson.encode(ours) != bson.encode(theirs):
            raise AssertionError(f"pymongo's side sends another command: {theirs}")


def client_path(uri: str, quick: bool, rng: random.Random, label: str) -> list[dict]:
    """The proxy against pymongo sending the same commands, through one client and server,
    in alternating rounds so that drift affects both alike."""
    rounds, number = (3, 20) if quick else (25, 200)
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
    database = client.get_default_database("bench")
    store = agent_datastore.DataStore(database["items"])
    proxy = store.proxy("user-1", "agent-a", "default")
    raw = database["items"].with_options(codec_options=agent_datastore._store.CODEC_OPTIONS)
    value = make_value(1024, rng)
    batch = {f"key-{i:03d}": make_value(1024, rng) for i in range(100)}
    scope = _core.Scope("user-1", "agent-a", "default")
    is_responder = label == "responder"
    if is_responder:
        documents = [{"key": key, "value": v} for key, v in batch.items()]
        database.command({"benchConfig": 1, "find": documents})
    else:
        proxy.set_many(batch)
    proxy.set("k", value)
    check_raw_commands(scope, value, store.now())
    keys = list(batch)
    # pymongo's side builds its command on every call, as its user would (the time is in
    # every filter and pipeline), rather than sending the same objects again
    pairs = {
        "get": (
            lambda: proxy.get("key-000"),
            lambda: raw.find_one(
                raw_live_filter("key-000", datetime.now(timezone.utc)),
                {"value": 1, "_id": 0},
                collation=SIMPLE,
            ),
        ),
        "set": (
            lambda: proxy.set("k", value, metadata={"source": "bench"}),
            lambda: raw.update_one(
                raw_item_filter("k"),
                raw_set_pipeline(value, {"source": "bench"}, datetime.now(timezone.utc)),
                upsert=True,
                collation=SIMPLE,
            ),
        ),
        "get_many (100)": (
            lambda: proxy.get_many(keys),
            lambda: list(
                raw.find(
                    raw_live_filter({"$in": keys}, datetime.now(timezone.utc)),
                    {"key": 1, "value": 1, "_id": 0},
                    batch_size=_core.LISTING_BATCH_SIZE,
                    collation=SIMPLE,
                )
            ),
        ),
        "set_many (100)": (
            lambda: proxy.set_many(batch),
            lambda: raw.bulk_write(raw_set_many(batch), ordered=False),
        ),
    }
    rows = []
    for name, (with_proxy, with_pymongo) in pairs.items():
        with_proxy(), with_pymongo()  # warm-up, and connections in the pool
        proxy_samples, raw_samples = [], []
        for round_number in range(rounds):
            # ABBA: which goes first changes every round, so neither always runs warmer
            first, second = (
                (with_proxy, with_pymongo) if round_number % 2 == 0 else (with_pymongo, with_proxy)
            )
            timed = {}
            for call in (first, second):
                timed[call] = measure(call, number=number, repeats=1, warmup=0)["median"]
            proxy_samples.append(timed[with_proxy])
            raw_samples.append(timed[with_pymongo])
        ratios = [p / r for p, r in zip(proxy_samples, raw_samples, strict=True)]
        rows.append(
            {
                "operation": name,
                "server": label,
                "proxy_us": summary(proxy_samples),
                "pymongo_us": summary(raw_samples),
                "ratio": statistics.median(ratios),
            }
        )
    if not is_responder:
        store.collection.delete_many({"userId": "user-1", "agentName": "agent-a"})
    store.close()
    client.close()
    return rows


# ------------------------------------------------------------------------------ scaling


def scaling(uri: str | None, quick: bool, rng: random.Random) -> dict:
    """Time per item of batches and listings at each size, and peak memory.

    Each size has its own namespace, whose documents the stub and the responder serve, so
    that every size is ready at once and the samples go round-robin over the sizes (the
    direction reversed every round): a burst of noise on a shared machine then hits every
    size alike instead of all the samples of one size, and is not taken for growth. A sample
    of a small batch is the mean of enough calls to cover 100 items.
    """
    batches = [1, 10, 100] if quick else [1, 10, 100, 1_000, 10_000]
    listings = [1_000, 5_000] if quick else [1_000, 10_000, 100_000, 200_000]
    batch_rounds, listing_rounds = (2, 2) if quick else (7, 9)
    # tracemalloc slows every allocation: memory is measured on its own, once
    result: dict[str, list[dict]] = {"batch": [], "listing": []}
    value = make_value(1024, rng)
    targets: list[tuple[str, Any, Callable[[list[dict], str], None]]] = []
    store, collection = stub_store()
    targets.append(("stub", store, collection.serve))
    client: MongoClient[dict[str, Any]] | None = None
    if uri is not None:
        client = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        wire_store = agent_datastore.DataStore(client.bench["items"])
        database = client.bench
        targets.append(
            (
                "wire",
                wire_store,
                lambda docs, namespace: database.command(
                    {"benchConfig": 1, "find": docs, "namespace": namespace}
                ),
            )
        )
    for label, target_store, serve in targets:
        raw = target_store._target
        batch_calls: dict[tuple[str, int], Callable[[], Any]] = {}
        for size in batches:
            namespace = f"batch-{size}"
            proxy = target_store.proxy("user-1", "agent-a", namespace)
            items = {f"key-{i:06d}": value for i in range(size)}
            serve([{"key": key, "value": value} for key in items], namespace)
            batch_calls["set_many", size] = lambda p=proxy, i=items: p.set_many(i)
            batch_calls["get_many", size] = lambda p=proxy, i=items: p.get_many(list(i))
            if label == "wire":
                # the same commands sent by pymongo alone: what the driver and the server
                # cost at this size, without this package
                scope = _core.Scope("user-1", "agent-a", namespace)
                projection = {"key": 1, "value": 1, "_id": 0}
                batch_calls["set_many, pymongo alone", size] = lambda s=scope, i=items: (
                    raw.bulk_write(_raw_writes(s, i), ordered=False)
                )
                batch_calls["get_many, pymongo alone", size] = lambda s=scope, i=items: list(
                    raw.find(
                        s.many_filter(list(i), datetime.now(timezone.utc)),
                        projection,
                        batch_size=_core.LISTING_BATCH_SIZE,
                        collation=SIMPLE,
                    )
                )
        batch_timings = _round_robin(batch_calls, batch_rounds, lambda size: max(1, 100 // size))
        result["batch"] += _scaling_rows(label, batch_calls, batch_timings, "items", "us_per_item")
        listing_calls: dict[tuple[str, int], Callable[[], Any]] = {}
        for size in listings:
            namespace = f"listing-{size}"
            proxy = target_store.proxy("user-1", "agent-a", namespace)
            serve([{"key": f"key-{i:07d}"} for i in range(size)], namespace)
            listing_calls["list_keys", size] = lambda p=proxy: p.list_keys(prefix="key-")
            listing_calls["iter_keys", size] = lambda p=proxy: sum(
                1 for _ in p.iter_keys(prefix="key-")
            )
        listing_timings = _round_robin(listing_calls, listing_rounds, lambda size: 1)
        result["listing"] += _scaling_rows(
            label, listing_calls, listing_timings, "keys", "us_per_key"
        )
    if client is not None:
        client.close()
    return result


def _raw_writes(scope: _core.Scope, items: dict[str, Any]) -> list[UpdateOne]:
    """``raw_set_many`` for any scope: the upserts a pymongo user builds for a batch."""
    now = datetime.now(timezone.utc)
    return [
        UpdateOne(
            scope.item_filter(key), raw_set_pipeline(item, {}, now), upsert=True, collation=SIMPLE
        )
        for key, item in items.items()
    ]


def _scaling_rows(
    target: str,
    calls: dict[tuple[str, int], Callable[[], Any]],
    timings: dict[tuple[str, int], dict],
    count: str,
    unit: str,
) -> list[dict]:
    """One row per (operation, size): time per item (or key) and the call's peak memory."""
    return [
        {
            "target": target,
            "operation": name,
            count: size,
            unit: timing["median"] / size,
            "peak_bytes": peak_memory(calls[name, size]),
            "timing_us": timing,
        }
        for (name, size), timing in timings.items()
    ]


def _round_robin(
    calls: dict[tuple[str, int], Callable[[], Any]], rounds: int, number: Callable[[int], int]
) -> dict[tuple[str, int], dict]:
    """Samples of every (operation, size) call in turn, round after round, the order reversed
    every other round; a sample is the mean of ``number(size)`` calls."""
    order = sorted(calls, key=lambda name_size: (name_size[1], name_size[0]))
    for name_size in order:  # warm-up
        calls[name_size]()
    samples: dict[tuple[str, int], list[float]] = {name_size: [] for name_size in order}
    for round_number in range(rounds):
        for name_size in order if round_number % 2 == 0 else order[::-1]:
            timing = measure(calls[name_size], number=number(name_size[1]), repeats=1, warmup=0)
            samples[name_size].append(timing["median"])
    return {name_size: summary(samples[name_size]) for name_size in order}


# ----------------------------------------------------------------------------- embedded


def embedded(quick: bool, rng: random.Random) -> list[dict]:
    """The embedded store filled to each size: one set, one get, and a set_many of 100."""
    sizes = [50, 100] if quick else [125, 250, 500, 1_000]
    rows = []
    value = make_value(1024, rng)
    for size in sizes:
        with agent_datastore.connect("mongomock://") as store:
            proxy = store.proxy("user-1", "agent-a")
            for start in range(0, size, 100):
                proxy.set_many(
                    {f"fill-{i:06d}": value for i in range(start, min(size, start + 100))}
                )
            get = measure(lambda: proxy.get("fill-000000"), number=5, repeats=3)
            put = measure(lambda: proxy.set("fill-000000", value), number=5, repeats=3)
            batch = measure(
                lambda: proxy.set_many({f"extra-{i:03d}": value for i in range(100)}),
                number=1,
                repeats=3,
                warmup=1,
            )
            rows.append({"items": size, "get_us": get, "set_us": put, "set_many_100_us": batch})
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        growth = math.log(last["get_us"]["median"] / first["get_us"]["median"]) / math.log(
            last["items"] / first["items"]
        )
        for row in rows:
            row["get_growth_exponent"] = growth
    return rows


# ------------------------------------------------------------------------------ budgets


def budgets(results: dict) -> list[dict]:
    checks = []
    for row in results["client_path"]:
        if row["server"] == "responder":
            checks.append(
                {
                    "budget": f"over the wire, proxy/pymongo for {row['operation']} <= 1.10",
                    "measured": round(row["ratio"], 3),
                    "holds": row["ratio"] <= 1.10,
                }
            )
    for row in results["layer"]:
        checks.append(
            {
                "budget": f"layer cost of {row['operation']} ({row['value']}) <= 3x pymongo's "
                "encoding of the same command",
                "measured": round(row["ratio_to_encoding"], 2),
                "holds": row["ratio_to_encoding"] <= 3.0,
            }
        )
    for kind, unit, count in [("batch", "us_per_item", "items"), ("listing", "us_per_key", "keys")]:
        rows = results["scaling"][kind]
        for target in sorted({r["target"] for r in rows}):
            for operation in sorted({r["operation"] for r in rows}):
                if "pymongo alone" in operation:
                    continue  # a reference, not this package's budget
                series = [r for r in rows if r["target"] == target and r["operation"] == operation]
                series = sorted((r for r in series if r[count] >= 100), key=lambda r: r[count])
                if len(series) < 2:
                    continue
                # growth is a larger size costing more per item than a smaller one; a time
                # per item that falls as a per-call cost is spread over more items is not
                growth = max(
                    later[unit] / min(r[unit] for r in series[:index])
                    for index, later in enumerate(series)
                    if index
                )
                checks.append(
                    {
                        "budget": f"{operation} on {target}: time per {count[:-1]} does not grow "
                        "with size "
                        f"(a size / the best smaller size <= 1.5)",
                        "measured": round(growth, 2),
                        "holds": growth <= 1.5,
                    }
                )
    # from ten pages up: below one full page, a stream holds less than a page
    listing = [
        r
        for r in results["scaling"]["listing"]
        if r["operation"] == "iter_keys" and r["keys"] >= 10 * _core.KEY_PAGE_SIZE
    ]
    for target in sorted({r["target"] for r in listing}):
        series = [r for r in listing if r["target"] == target]
        if len(series) < 2:
            continue
        growth = series[-1]["peak_bytes"] / series[0]["peak_bytes"]
        checks.append(
            {
                "budget": f"iter_keys on {target}: peak memory flat (largest / smallest <= 1.5)",
                "measured": round(growth, 2),
                "holds": growth <= 1.5,
            }
        )
    return checks


# ------------------------------------------------------------------------------ report


def machine() -> dict:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "pymongo": pymongo.version,
        "agent_datastore": agent_datastore.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        # the machine may be shared: what else ran is known only through the load it left
        "load_average_at_start": _load_average(),
    }


def _load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, where the system reports them."""
    return [round(load, 2) for load in os.getloadavg()] if hasattr(os, "getloadavg") else None


def write_markdown(results: dict, path: Path) -> None:
    lines = [f"# Benchmark results ({results['machine']['date']})", ""]
    info = results["machine"]
    lines += [
        f"Python {info['python']}, pymongo {info['pymongo']}, agent-datastore "
        f"{info['agent_datastore']}, {info['cpus']} CPUs, {info['platform']}. "
        f"Command: `{results['command']}`."
        + (
            f" Load average (1, 5, 15 minutes) {info['load_average_at_start']} at the start, "
            f"{info['load_average_at_end']} at the end."
            if info.get("load_average_at_start") is not None
            else ""
        ),
        "",
        "## Budgets",
        "",
        "| Budget | Measured | Holds |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c['budget']} | {c['measured']} | {'yes' if c['holds'] else '**no**'} |"
        for c in results["budgets"]
    ]
    lines += [
        "",
        "## Layer cost (database taken out), microseconds",
        "",
        "| Operation | Value | Items | Layer median | Per item | p90 | p99 "
        "| pymongo encodes the command | pymongo decodes the reply | Ratio to encoding "
        "(the budget) | Ratio to encoding and decoding |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["layer"]:
        layer, enc, dec = r["layer_us"], r["encode_us"], r["decode_us"]
        lines.append(
            f"| {r['operation']} | {r['value']} | {r['items']} | {layer['median']:.1f} | "
            f"{layer['median'] / r['items']:.2f} | "
            f"{layer['p90']:.1f} | {layer['p99']:.1f} | {enc['median']:.1f} | "
            f"{dec['median']:.1f} | "
            f"{r['ratio_to_encoding']:.2f} | {r['ratio']:.2f} |"
        )
    lines += [
        "",
        "## Client path, microseconds per call (1 KB values)",
        "",
        "| Operation | Server | Proxy median | p90 | p99 | pymongo median | Ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["client_path"]:
        p, q = r["proxy_us"], r["pymongo_us"]
        lines.append(
            f"| {r['operation']} | {r['server']} | {p['median']:.0f} | {p['p90']:.0f} | "
            f"{p['p99']:.0f} | {q['median']:.0f} | {r['ratio']:.3f} |"
        )
    lines += [
        "",
        "## Scaling: batches (1 KB values)",
        "",
        "| Target | Operation | Items | Microseconds per item | Peak memory |",
        "|---|---|---|---|---|",
    ]
    for r in results["scaling"]["batch"]:
        lines.append(
            f"| {r['target']} | {r['operation']} | {r['items']:,} | {r['us_per_item']:.2f} | "
            f"{r['peak_bytes'] / 1e6:.2f} MB |"
        )
    lines += [
        "",
        "## Scaling: key listing",
        "",
        "| Target | Operation | Keys | Microseconds per key | Peak memory |",
        "|---|---|---|---|---|",
    ]
    for r in results["scaling"]["listing"]:
        lines.append(
            f"| {r['target']} | {r['operation']} | {r['keys']:,} | {r['us_per_key']:.2f} | "
            f"{r['peak_bytes'] / 1e6:.2f} MB |"
        )
    lines += [
        "",
        "## Embedded store (1 KB values)",
        "",
        "| Items in the store | get | set | set_many of 100 |",
        "|---|---|---|---|",
    ]
    for r in results["embedded"]:
        lines.append(
            f"| {r['items']:,} | {r['get_us']['median'] / 1000:.1f} ms | "
            f"{r['set_us']['median'] / 1000:.1f} ms | "
            f"{r['set_many_100_us']['median'] / 1e6:.2f} s |"
        )
    if results["embedded"] and "get_growth_exponent" in results["embedded"][0]:
        lines += [
            "",
            f"A `get` grows as the store's size to the power "
            f"{results['embedded'][0]['get_growth_exponent']:.2f} (1 is linear: the fake "
            "scans every document).",
        ]
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (batches, listing) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target in sorted({r["target"] for r in results["scaling"]["batch"]}):
        for operation in sorted({r["operation"] for r in results["scaling"]["batch"]}):
            series = [
                r
                for r in results["scaling"]["batch"]
                if r["target"] == target and r["operation"] == operation
            ]
            if not series:
                continue
            batches.plot(
                [r["items"] for r in series],
                [r["us_per_item"] for r in series],
                marker="o",
                label=f"{operation} ({target})",
            )
    batches.set(
        xscale="log",
        yscale="log",
        xlabel="items per call",
        ylabel="microseconds per item",
        title="Batches, 1 KB values",
    )
    batches.legend()
    for target in sorted({r["target"] for r in results["scaling"]["listing"]}):
        for operation in ("list_keys", "iter_keys"):
            series = [
                r
                for r in results["scaling"]["listing"]
                if r["target"] == target and r["operation"] == operation
            ]
            listing.plot(
                [r["keys"] for r in series],
                [r["us_per_key"] for r in series],
                marker="o",
                label=f"{operation} ({target})",
            )
    listing.set(
        xscale="log", xlabel="keys listed", ylabel="microseconds per key", title="Key listing"
    )
    listing.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument(
        "--out",
        help="where to write results (default: benchmarks/results, or with --quick a new "
        "temporary folder, so that a quick run never replaces the committed results)",
    )
    arguments = parser.parse_args(argv)
    if arguments.out is not None:
        out = Path(arguments.out)
    elif arguments.quick:
        out = Path(tempfile.mkdtemp(prefix="agent-datastore-benchmark-"))
        print(f"--quick without --out: writing to {out}", file=sys.stderr)
    else:
        out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "seed": SEED,
        "command": "python -m benchmarks.run" + (" --quick" if arguments.quick else ""),
    }
    print("layer cost ...", file=sys.stderr)
    results["layer"] = layer_cost(arguments.quick, rng)
    with Responder() as responder:
        print("client path ...", file=sys.stderr)
        results["client_path"] = client_path(responder.uri, arguments.quick, rng, "responder")
        if os.environ.get("MONGODB_URI"):
            results["client_path"] += client_path(
                os.environ["MONGODB_URI"], arguments.quick, rng, "mongodb"
            )
        print("scaling ...", file=sys.stderr)
        results["scaling"] = scaling(responder.uri, arguments.quick, rng)
    print("embedded ...", file=sys.stderr)
    results["embedded"] = embedded(arguments.quick, rng)
    results["budgets"] = budgets(results)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_at_end"] = _load_average()
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out / "results.md")
    plot(results, out / "scaling.png")
    missed = [c for c in results["budgets"] if not c["holds"]]
    print(
        f"wrote {out}/results.md, results.json, scaling.png in {results['seconds']} s; "
        f"{len(results['budgets']) - len(missed)} budgets hold, {len(missed)} missed",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
