"""A stub collection that answers the store's key listings from a sorted list, at once.

The embedded fake scans every document per query and slows quadratically past a few thousand
items; a real server is not available here. This stub stands in for a pymongo ``Collection``
(the store cannot tell it from one) and understands exactly the queries of ``list_keys`` and
``iter_keys``: equality on the scope, an optional anchored prefix regex, an optional ``$gt``
bound, the expiry condition, a sort on key and a limit. Anything else fails the test.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from typing import Any

from agent_datastore import DataStore


class StubCollection:
    def __init__(self, keys: list[str], scope: dict[str, str]) -> None:
        # kept as UTF-8, whose byte order is code point order, and decoded into a new str
        # for each answer, as a driver decodes BSON: a listing then holds keys of its own
        self.keys = sorted(key.encode() for key in keys)
        self.scope = scope
        self.query_count = 0
        self.first_queries: list[dict[str, Any]] = []  # a few, so memory stays flat

    # what DataStore needs of a collection
    name = "stub"
    database = None

    def with_options(self, **_: Any) -> StubCollection:
        return self

    def create_index(self, *_: Any, **__: Any) -> str:
        return "stub"

    def find(
        self,
        filter: dict[str, Any],
        projection: dict[str, Any],
        *,
        sort: list[tuple[str, int]],
        limit: int,
        **_: Any,
    ) -> Iterator[dict[str, str]]:
        self.query_count += 1
        if len(self.first_queries) < 2:
            self.first_queries.append(filter)
        query = dict(filter)
        assert query.pop("expiresAt") == {"$not": {"$lte": query_moment(filter)}}
        key_condition = query.pop("key", {})
        assert query == self.scope
        assert projection == {"key": 1, "_id": 0}
        assert sort == [("key", 1)]
        start = 0
        if "$gt" in key_condition:
            start = bisect.bisect_right(self.keys, key_condition["$gt"].encode())
        pattern = re.compile(key_condition["$regex"]) if "$regex" in key_condition else None
        emitted = 0
        matched = False
        for index in range(start, len(self.keys)):  # no slice: no copy of the stub's list
            key = self.keys[index].decode()
            if limit and emitted == limit:
                return
            if pattern is not None and not pattern.match(key):
                if matched:  # the keys with a prefix are contiguous in sorted order
                    return
                continue
            matched = True
            emitted += 1
            yield {"key": key}


def query_moment(query: dict[str, Any]) -> Any:
    return query["expiresAt"]["$not"]["$lte"]


def stub_store(keys: list[str]) -> tuple[DataStore, StubCollection]:
    """A store over a stub holding ``keys`` for user "u", agent "a", namespace "default"."""
    stub = StubCollection(keys, {"userId": "u", "agentName": "a", "namespace": "default"})
    return DataStore(stub, ensure_indexes=False), stub  # type: ignore[arg-type]
