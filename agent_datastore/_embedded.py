"""The embedded in-memory store: mongomock-ng behind a lock.

mongomock-ng checks a unique index and inserts as two separate steps, so two threads upserting
one new key could both insert. Every call the store makes is therefore run under one lock per
fake collection, shared by every DataStore that wraps it, which makes each call atomic, as it
is on a real server.

The fake compares strings byte for byte whatever collation is asked, and refuses the
``collation`` argument on writes, so the adapter drops it. Its upsert fails with a bare
``KeyError`` when a ``$set`` path holds a ``$`` (as ``metadata.cost$`` does, which MongoDB
accepts), so under the lock an upsert is done as a lookup followed by an insert of the
document MongoDB would build, or by a plain update; ``bulk_write`` does the same per request.

The fake scans every document for each query and each unique-index check, so it suits tests
and demos of a few thousand items, not production.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import bson

__all__ = ["LockedCollection", "is_fake_collection", "new_client"]

_INSTALL_HINT = "the embedded store needs mongomock-ng: pip install 'agent-datastore[embedded]'"


def new_client(**options: Any) -> Any:
    """A new, empty, private in-memory client."""
    try:
        import mongomock_ng
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return mongomock_ng.MongoClient(**options)


def is_fake_collection(collection: object) -> bool:
    return type(collection).__module__.startswith(("mongomock_ng.", "mongomock."))


# One lock per fake collection's data. The fake keeps one data object per collection name for
# as long as its client lives; the lock goes away with it.
_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock_for(collection: Any) -> threading.Lock:
    data = collection._store  # mongomock-ng's per-collection data, the same for every handle
    with _locks_guard:
        lock = _locks.get(data)
        if lock is None:
            lock = _locks[data] = threading.Lock()
        return lock


class LockedCollection:
    """The few collection methods the store uses, each run whole under the collection's lock."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self._lock = _lock_for(collection)

    def find_one(self, filter: Mapping[str, Any], projection: Any = None, **_: Any) -> Any:
        with self._lock:
            return self._collection.find_one(filter, projection)

    @property
    def database(self) -> Any:
        return self._collection.database

    @property
    def name(self) -> str:
        return str(self._collection.name)

    def find(
        self,
        filter: Mapping[str, Any],
        projection: Any = None,
        *,
        sort: Any = None,
        limit: int = 0,
        **_: Any,  # batch_size and collation: the fake answers everything at once, binary
    ) -> list[Any]:
        with self._lock:
            return list(self._collection.find(filter, projection, sort=sort, limit=limit))

    def count_documents(self, filter: Mapping[str, Any], **_: Any) -> int:
        with self._lock:
            return int(self._collection.count_documents(filter))

    def aggregate(self, pipeline: list[Any], **_: Any) -> list[Any]:
        with self._lock:
            if _BSON_SIZE_OF_ROOT not in repr(pipeline):
                return list(self._collection.aggregate(pipeline))
            # The fake has no $bsonSize: run the pipeline over copies that carry their size.
            sized = new_client().scratch.sized
            for document in self._collection.find({}):
                sized.insert_one({**document, _SIZE_FIELD: len(bson.encode(document))})
            return list(sized.aggregate(_with_size_field(pipeline)))

    def update_one(
        self, filter: Mapping[str, Any], update: Any, upsert: bool = False, **_: Any
    ) -> None:
        with self._lock:
            if upsert:
                self._upsert(filter, update)
            else:
                self._collection.update_one(filter, update)

    def bulk_write(self, requests: list[Any], ordered: bool = True) -> None:
        with self._lock:
            for request in requests:
                # pymongo's UpdateOne keeps its filter and update in these attributes
                self._upsert(request._filter, request._doc)

    def _upsert(self, filter: Mapping[str, Any], update: Mapping[str, Any]) -> None:
        unexpected = set(update) - {"$set", "$setOnInsert"}
        if unexpected:  # pragma: no cover - the store sends no other operator
            raise NotImplementedError(f"embedded upsert with {sorted(unexpected)}")
        existing = self._collection.find_one(filter, {"_id": 1})
        if existing is not None:
            self._collection.update_one({"_id": existing["_id"]}, {"$set": update["$set"]})
            return
        # what MongoDB inserts: the filter's equalities, then the $set and $setOnInsert paths
        document: dict[str, Any] = dict(filter)
        for path, value in [*update["$set"].items(), *update.get("$setOnInsert", {}).items()]:
            _assign(document, path.split("."), value)
        self._collection.insert_one(document)

    def delete_one(self, filter: Mapping[str, Any], **_: Any) -> Any:
        with self._lock:
            return self._collection.delete_one(filter)

    def delete_many(self, filter: Mapping[str, Any], **_: Any) -> Any:
        with self._lock:
            return self._collection.delete_many(filter)

    def distinct(self, key: str, filter: Mapping[str, Any], **_: Any) -> list[Any]:
        with self._lock:
            return list(self._collection.distinct(key, filter))

    def create_index(self, keys: Any, **kwargs: Any) -> str:
        with self._lock:
            return str(self._collection.create_index(keys, **kwargs))

    def index_information(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._collection.index_information())


_BSON_SIZE_OF_ROOT = repr({"$bsonSize": "$$ROOT"})
_SIZE_FIELD = "__bson_size"


def _with_size_field(node: Any) -> Any:
    if node == {"$bsonSize": "$$ROOT"}:
        return "$" + _SIZE_FIELD
    if isinstance(node, dict):
        return {name: _with_size_field(value) for name, value in node.items()}
    if isinstance(node, list):
        return [_with_size_field(value) for value in node]
    return node


def _assign(document: dict[str, Any], path: list[str], value: Any) -> None:
    for name in path[:-1]:
        document = document.setdefault(name, {})
    document[path[-1]] = value
