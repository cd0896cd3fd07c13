"""The embedded in-memory store: mongomock-ng behind a lock.

mongomock-ng checks a unique index and inserts as two separate steps, so two threads upserting
one new key could both insert. Every call the store makes is therefore run under one lock per
fake collection, shared by every DataStore that wraps it, which makes each call atomic, as it
is on a real server.

The fake compares strings byte for byte whatever collation is asked, and refuses the
``collation`` argument on writes, so the adapter drops it. Its upsert fails with a bare
``KeyError`` when a ``$set`` path holds a ``$`` (as ``metadata.cost$`` does, which MongoDB
accepts), and it evaluates update pipelines wrongly, so under the lock every write is done as
a lookup, then the pipeline run by ``_pipeline`` (or the ``$set``), then an insert of the
document MongoDB would build or a replacement of the one found; ``bulk_write`` does the same
per request. The fake has no ``$bsonSize``: projections and pipelines that use it on the
whole document are computed here.

The fake deletes documents whose TTL date has passed when it is read, by the real clock; a
store given another clock still sees expired items as a server does before its TTL monitor
runs, which is what the store's own filters are for.

The fake scans every document for each query and each unique-index check, so it suits tests
and demos of a few thousand items, not production.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from itertools import islice
from typing import Any

import bson
from pymongo import ReturnDocument
from pymongo.results import UpdateResult

from ._codec import string_size
from ._pipeline import run_pipeline

__all__ = ["AsyncLockedCollection", "LockedCollection", "is_fake_collection", "new_client"]

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
        if not _computes_fields(projection):
            with self._lock:
                return self._collection.find_one(filter, projection)
        with self._lock:
            document = self._collection.find_one(filter)  # a copy: projected without the lock
        return None if document is None else _project(document, projection)

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
        skip: int = 0,
        limit: int = 0,
        **_: Any,  # batch_size and collation: the fake answers everything at once, binary
    ) -> Iterator[Any]:
        """The documents found, copied under the lock. A projection that computes sizes is
        applied to each document only when the caller reaches it, without the lock: a reader
        that stops early (``take_within``) never pays for the documents it leaves."""
        options = {"sort": sort, "skip": skip, "limit": limit}
        with self._lock:
            if not _computes_fields(projection):
                return iter(list(self._collection.find(filter, projection, **options)))
            documents = list(self._collection.find(filter, **options))
        return (_project(document, projection) for document in documents)

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
                sized.insert_one({**document, _SIZE_FIELD: bson_size(document)})
            return list(sized.aggregate(_with_size_field(pipeline)))

    def update_one(
        self, filter: Mapping[str, Any], update: Any, upsert: bool = False, **_: Any
    ) -> None:
        with self._lock:
            self._write(filter, update, upsert)

    def update_many(self, filter: Mapping[str, Any], update: Any, **_: Any) -> UpdateResult:
        """Each matching document updated as ``update_one`` updates one (no upsert)."""
        modified = 0
        with self._lock:
            ids = [document["_id"] for document in self._collection.find(filter, {"_id": 1})]
            for document_id in ids:
                before, after = self._write({"_id": document_id}, update, upsert=False)
                modified += before != after
        return UpdateResult({"n": len(ids), "nModified": modified}, acknowledged=True)

    def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Any,
        projection: Any = None,
        *,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        **_: Any,
    ) -> Any:
        with self._lock:
            before, after = self._write(filter, update, upsert)
        chosen = after if return_document == ReturnDocument.AFTER else before
        return None if chosen is None else _project(chosen, projection)

    def bulk_write(self, requests: list[Any], ordered: bool = True) -> None:
        with self._lock:
            for request in requests:
                # pymongo's UpdateOne keeps its filter, update and upsert flag in these
                self._write(request._filter, request._doc, bool(request._upsert))

    def _write(
        self, filter: Mapping[str, Any], update: Any, upsert: bool
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One update as MongoDB runs it; the document before and after (``None`` when there
        was none, or none was made)."""
        before = self._collection.find_one(filter)
        if before is None and not upsert:
            return None, None
        if before is None:
            # what MongoDB inserts: the filter's equalities, then the update applied to them
            before_update: dict[str, Any] = dict(filter)
        else:
            before_update = before
        after = _updated(before_update, update)
        if before is None:
            self._collection.insert_one(after)
        elif after != before:
            self._collection.replace_one({"_id": before["_id"]}, after)
        return before, after

    def find_one_and_delete(
        self, filter: Mapping[str, Any], projection: Any = None, **_: Any
    ) -> Any:
        with self._lock:
            document = self._collection.find_one(filter)
            if document is None:
                return None
            self._collection.delete_one({"_id": document["_id"]})
        return _project(document, projection)

    def delete_one(self, filter: Mapping[str, Any], **_: Any) -> Any:
        with self._lock:
            return self._collection.delete_one(filter)

    def delete_many(self, filter: Mapping[str, Any], **_: Any) -> Any:
        with self._lock:
            return self._collection.delete_many(filter)

    def create_index(self, keys: Any, **kwargs: Any) -> str:
        with self._lock:
            return str(self._collection.create_index(keys, **kwargs))

    def create_indexes(self, indexes: list[Any], **_: Any) -> list[str]:
        # maxTimeMS: the fake builds an index at once
        with self._lock:
            return list(self._collection.create_indexes(indexes))

    def index_information(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._collection.index_information())

    def estimated_document_count(self, **_: Any) -> int:
        with self._lock:
            return int(self._collection.estimated_document_count())


class _DocumentList:
    """What ``AsyncLockedCollection.find`` returns: a cursor's ``to_list`` and ``async for``,
    over the documents of ``LockedCollection.find``, read as far as the caller reads."""

    def __init__(self, documents: Iterator[Any]) -> None:
        self._documents = documents

    async def to_list(self, length: int | None = None) -> list[Any]:
        return list(self._documents if length is None else islice(self._documents, length))

    async def __aiter__(self) -> AsyncIterator[Any]:
        for document in self._documents:
            yield document

    async def close(self) -> None:
        self._documents = iter(())


class AsyncLockedCollection:
    """The embedded store for ``AsyncDataStore``: ``LockedCollection``'s methods as
    coroutines, with ``AsyncCollection``'s shape.

    The fake answers from memory at once, so each call runs to its end without giving the
    event loop away: no thread, and the lock is never held across an ``await``.
    """

    def __init__(self, collection: LockedCollection) -> None:
        self._collection = collection

    @property
    def database(self) -> Any:
        return self._collection.database

    @property
    def name(self) -> str:
        return self._collection.name

    def find(self, *args: Any, **kwargs: Any) -> _DocumentList:
        return _DocumentList(self._collection.find(*args, **kwargs))

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find_one(*args, **kwargs)

    async def update_one(self, *args: Any, **kwargs: Any) -> None:
        self._collection.update_one(*args, **kwargs)

    async def update_many(self, *args: Any, **kwargs: Any) -> UpdateResult:
        return self._collection.update_many(*args, **kwargs)

    async def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find_one_and_update(*args, **kwargs)

    async def find_one_and_delete(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find_one_and_delete(*args, **kwargs)

    async def bulk_write(self, *args: Any, **kwargs: Any) -> None:
        self._collection.bulk_write(*args, **kwargs)

    async def delete_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.delete_one(*args, **kwargs)

    async def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.delete_many(*args, **kwargs)

    async def aggregate(self, *args: Any, **kwargs: Any) -> _DocumentList:
        """As ``AsyncCollection.aggregate``: a coroutine whose result is the cursor."""
        return _DocumentList(iter(self._collection.aggregate(*args, **kwargs)))

    async def create_index(self, *args: Any, **kwargs: Any) -> str:
        return self._collection.create_index(*args, **kwargs)

    async def create_indexes(self, *args: Any, **kwargs: Any) -> list[str]:
        return self._collection.create_indexes(*args, **kwargs)

    async def index_information(self) -> dict[str, Any]:
        return self._collection.index_information()


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


def _updated(document: dict[str, Any], update: Any) -> dict[str, Any]:
    if isinstance(update, list):
        return run_pipeline(document, update)
    unexpected = set(update) - {"$set", "$unset"}
    if unexpected:  # pragma: no cover - the store sends no other operator
        raise NotImplementedError(f"embedded update with {sorted(unexpected)}")
    # operator values are plain values, never expressions
    literals = {path: {"$literal": value} for path, value in update.get("$set", {}).items()}
    return run_pipeline(document, [{"$set": literals}, {"$unset": list(update.get("$unset", {}))}])


def _is_field_size(rule: Mapping[str, Any]) -> bool:
    """``{"$bsonSize": "$name"}``: the size of a field that holds a document."""
    argument = rule.get("$bsonSize") if len(rule) == 1 else None
    return isinstance(argument, str) and argument.startswith("$") and "." not in argument[1:]


def _computes_fields(projection: Any) -> bool:
    return isinstance(projection, Mapping) and any(
        isinstance(rule, Mapping) for rule in projection.values()
    )


def _project(document: Mapping[str, Any], projection: Any) -> dict[str, Any]:
    """An inclusion projection, where ``{"$bsonSize": "$$ROOT"}`` is the document's size."""
    if projection is None:
        return dict(document)
    result: dict[str, Any] = {}
    if projection.get("_id", 1) and "_id" in document:
        result["_id"] = document["_id"]
    for name, rule in projection.items():
        if name == "_id":
            continue
        if rule == {"$bsonSize": "$$ROOT"}:
            result[name] = bson_size(document)
        elif isinstance(rule, Mapping) and _is_field_size(rule):
            field_value = document.get(rule["$bsonSize"][1:])
            result[name] = None if field_value is None else bson_size(field_value)
        elif isinstance(rule, Mapping):  # pragma: no cover - the store computes nothing else
            raise NotImplementedError(f"projection {rule}")
        elif rule and name in document:
            result[name] = document[name]
    return result


# Strings and binaries longer than this are measured rather than encoded by ``bson_size``.
# Encoding a document of a 15 MiB string to learn its size took 4 to 25 ms (the buffer is
# grown by copies, and its pages are new each time), on the event loop of the store service.
LONG_VALUE_BYTES = 64 * 1024
# Beyond this many values, walking a document in Python costs more than encoding it in C.
_MAX_VALUES_WALKED = 10_000


class _TooManyValues(Exception):
    pass


def bson_size(document: Mapping[str, Any]) -> int:
    """``len(bson.encode(document))``, without copying its long strings and binaries: BSON
    stores each as its length and its bytes, so the document is encoded with them empty, and
    their lengths are added. A document of very many values is simply encoded."""
    long_bytes = 0
    walked = 0

    def without_long_values(value: Any) -> Any:
        nonlocal long_bytes, walked
        walked += 1
        if walked > _MAX_VALUES_WALKED:
            raise _TooManyValues
        if isinstance(value, str):
            if len(value) <= LONG_VALUE_BYTES:
                return value
            long_bytes += string_size(value)
            return ""
        if type(value) is bytes:  # Binary subtypes keep their own layout: encoded as they are
            if len(value) <= LONG_VALUE_BYTES:
                return value
            long_bytes += len(value)
            return b""
        if isinstance(value, Mapping):
            return {name: without_long_values(item) for name, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [without_long_values(item) for item in value]
        return value

    try:
        slim = without_long_values(document)
    except _TooManyValues:
        return len(bson.encode(document))
    return len(bson.encode(slim)) + long_bytes
