"""Operator tasks over a whole store: inspect, repair, export, import and check it.

The ``agent-datastore`` command is a thin shell over these functions; scripts can call them
directly. Every question is answered by the server (counts and aggregations, listings read
through cursors), never by pulling every document into the client, and every write goes
through the same validation as the proxies.

Export format (JSON Lines, one item per line)::

    {"userId": "u", "agentName": "a", "namespace": "default", "key": "k",
     "value": <the JSON value>, "metadata": {<name>: <JSON value>, ...},
     "createdAt": "2026-11-26T10:29:09.123Z", "updatedAt": "2026-11-26T10:29:09.123Z",
     "version": 3, "expiresAt": null}

Values and metadata are JSON already, so plain JSON holds them without loss; the dates are
ISO 8601 in UTC with MongoDB's millisecond precision. This is the documented equivalent of
MongoDB Extended JSON for this schema. ``version`` and ``expiresAt`` may be left out of a line
(exports made before they existed): the item is then at version 1 and does not expire.

An export is a copy of what is stored: an item that has expired but that the server's TTL
monitor has not deleted yet is exported with its ``expiresAt``, and is as invisible after an
import as it was before.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import bson
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from . import _codec, _core
from . import _operations as ops
from ._exceptions import DataStoreError, DataStoreUnavailable, translate_driver_errors
from ._operations import index_conflicts
from ._store import DataStore

__all__ = [
    "MAX_LINE_BYTES",
    "ImportReport",
    "agents",
    "count_items",
    "doctor",
    "export_items",
    "export_lines",
    "import_items",
    "item",
    "keys",
    "namespaces",
    "purge",
    "stats",
    "users",
]

_SIMPLE = _core.SIMPLE_COLLATION
# what json.loads skips around a value (RFC 8259): a line of only these is blank; any other
# character (str.strip would also drop \x1c-\x1f and \u2028) makes it a line to import or reject
_JSON_WHITESPACE = " \t\r\n"
_SCOPE_ORDER = [("userId", 1), ("agentName", 1), ("namespace", 1), ("key", 1)]
_STRING_FIELDS = ("userId", "agentName", "namespace", "key")
_DATE_FIELDS = ("createdAt", "updatedAt")


def _none_of_types(name: str, *types: str) -> dict[str, Any]:
    """A field that is present but of none of ``types``. (A list of types in one ``$type``
    would do, but the embedded fake does not support it.)"""
    return {"$and": [{name: {"$exists": True}}, *({name: {"$not": {"$type": t}}} for t in types)]}


# A document breaks the schema when a field is missing or of the wrong BSON type.
_BROKEN_SCHEMA: dict[str, Any] = {
    "$or": [
        *({name: {"$not": {"$type": "string"}}} for name in _STRING_FIELDS),
        {"value": {"$exists": False}},
        {"metadata": {"$not": {"$type": "object"}}},
        *({name: {"$not": {"$type": "date"}}} for name in _DATE_FIELDS),
        # optional fields: items written before versions existed have no version, and items
        # without a ttl have no expiresAt
        _none_of_types("version", "int", "long"),
        {"version": {"$lt": 1}},
        # null is tolerated (no expiry); $ne null also excludes a missing field
        {"$and": [{"expiresAt": {"$ne": None}}, {"expiresAt": {"$not": {"$type": "date"}}}]},
        # $type matches an array when one element has the type: arrays need their own test
        *(
            {name: {"$type": "array"}}
            for name in (*_STRING_FIELDS, "metadata", *_DATE_FIELDS, "version", "expiresAt")
        ),
    ]
}
_REQUIRED_FIELDS = ("userId", "agentName", "namespace", "key", "value", "metadata", *_DATE_FIELDS)
_EXPORT_FIELDS = (*_REQUIRED_FIELDS, "version", "expiresAt")


def _collection(store: DataStore) -> Any:
    # Inspection must work with read-only credentials, so it never creates the index.
    return store._target


def _scope_filter(
    user_id: str | None = None, agent_name: str | None = None, namespace: str | None = None
) -> dict[str, str]:
    """A filter on a prefix of the index: user, then agent, then namespace."""
    query: dict[str, str] = {}
    if user_id is not None:
        query["userId"] = _core.check_name(user_id, "user_id")
        if agent_name is not None:
            query["agentName"] = _core.check_name(agent_name, "agent_name")
            if namespace is not None:
                query["namespace"] = _core.check_name(namespace, "namespace")
    elif agent_name is not None or namespace is not None:
        raise ValueError("an agent needs its user, and a namespace its agent")
    return query


def users(store: DataStore) -> list[str]:
    """Every user id that holds at least one item, sorted. Read through a cursor, one index
    entry per user (see docs/schema.md, "Listings"): no size limit."""
    return ops.run_sync(ops.distinct_values({}), lambda: _collection(store))


def agents(store: DataStore, user_id: str) -> list[str]:
    """The agents of ``user_id`` that hold at least one item, sorted; read as ``users``."""
    listing = ops.distinct_values(_scope_filter(user_id))
    return ops.run_sync(listing, lambda: _collection(store))


def namespaces(store: DataStore, user_id: str, agent_name: str) -> list[str]:
    return store.proxy(user_id, agent_name).list_namespaces()


def keys(
    store: DataStore,
    user_id: str,
    agent_name: str,
    namespace: str = "default",
    prefix: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """The keys of one namespace, sorted, at most ``limit`` of them."""
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    return store.proxy(user_id, agent_name, namespace).list_keys(prefix, limit=limit or None)


def _iso(moment: Any) -> Any:
    if not isinstance(moment, datetime):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    # isoformat pads the year to four digits, which strftime("%Y") does not on every platform
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _text(value: Any) -> str:
    """A stored field as ``doctor`` shows it; a date (read naive, in UTC) with its zone."""
    return str(_core.as_utc(value) if isinstance(value, datetime) else value)


def _item_record(document: dict[str, Any]) -> dict[str, Any]:
    """A stored document as an export record: decoded value and metadata, ISO dates."""
    metadata = document.get("metadata")
    if isinstance(metadata, dict):
        metadata = {name: _codec.decode(value) for name, value in metadata.items()}
    record = {name: document.get(name) for name in _EXPORT_FIELDS}
    record["value"] = _codec.decode(document.get("value"))
    record["metadata"] = metadata
    record["version"] = document.get("version", 1)
    for name in (*_DATE_FIELDS, "expiresAt"):
        record[name] = _iso(record[name])
    return record


def item(
    store: DataStore, user_id: str, agent_name: str, key: str, namespace: str = "default"
) -> dict[str, Any] | None:
    """One item with its metadata, timestamps, version, expiry and stored size in bytes;
    ``None`` if absent. Unlike an agent, an operator also sees an item that has expired but
    that the server has not deleted yet: ``expired`` says so."""
    scope = _core.Scope.of(user_id, agent_name, namespace)
    item_filter = scope.item_filter(_core.check_key(key))
    with translate_driver_errors():
        document = _collection(store).find_one(item_filter, collation=_SIMPLE)
    if document is None:
        return None
    size = len(bson.encode(document))
    expired = not _core.is_live(document, store.now())
    return {**_item_record(document), "size": size, "expired": expired}


def existing_keys(
    store: DataStore, user_id: str, agent_name: str, keys: Iterable[str], namespace: str = "default"
) -> list[str]:
    """Those of ``keys`` that hold a live item, in the order given (repeats once): what
    ``delete_many`` of them would delete now. One query, which reads no value; an item that
    has expired but that the server has not deleted yet does not count, as for an agent."""
    scope = _core.Scope.of(user_id, agent_name, namespace)
    look = ops.existing_keys(scope, store._settings(), keys)
    return ops.run_sync(look, lambda: _collection(store))


def stats(store: DataStore, top: int = 5) -> dict[str, Any]:
    """Counts and sizes of the whole store, and its largest users, agents and namespaces."""
    groups = {
        "users": {"userId": "$userId"},
        "agents": {"userId": "$userId", "agentName": "$agentName"},
        "namespaces": {"userId": "$userId", "agentName": "$agentName", "namespace": "$namespace"},
    }
    size = {"$bsonSize": "$$ROOT"}
    facets: dict[str, list[dict[str, Any]]] = {}
    for name, key in groups.items():
        group = {"$group": {"_id": key, "documents": {"$sum": 1}, "size": {"$sum": size}}}
        # only counts and the top few leave the server: the facet result must fit 16 MiB
        facets[name] = [{"$group": {"_id": key}}, {"$count": "n"}]
        facets[f"largest_{name}"] = [group, {"$sort": {"size": -1, "_id": 1}}, {"$limit": top}]
    facets["total"] = [{"$group": {"_id": None, "documents": {"$sum": 1}, "size": {"$sum": size}}}]
    with translate_driver_errors():
        (result,) = list(
            _collection(store).aggregate([{"$facet": facets}], collation=_SIMPLE, allowDiskUse=True)
        )
    total = result["total"][0] if result["total"] else {"documents": 0, "size": 0}
    summary: dict[str, Any] = {"documents": total["documents"], "size": total["size"]}
    for name in groups:
        summary[name] = result[name][0]["n"] if result[name] else 0
    for name in groups:
        summary[f"largest_{name}"] = [
            {**group["_id"], "documents": group["documents"], "size": group["size"]}
            for group in result[f"largest_{name}"]
        ]
    return summary


def count_items(
    store: DataStore,
    user_id: str | None = None,
    agent_name: str | None = None,
    namespace: str | None = None,
) -> int:
    with translate_driver_errors():
        return int(
            _collection(store).count_documents(
                _scope_filter(user_id, agent_name, namespace), collation=_SIMPLE
            )
        )


def purge(store: DataStore, user_id: str, agent_name: str | None = None) -> int:
    """Delete every item of a user, or of one of its agents; the number deleted."""
    with translate_driver_errors():
        result = _collection(store).delete_many(
            _scope_filter(user_id, agent_name), collation=_SIMPLE
        )
    return int(result.deleted_count)


def _documents_in_scope(
    store: DataStore, user_id: str | None, agent_name: str | None, namespace: str | None
) -> Iterator[dict[str, Any]]:
    """The stored documents of a scope, in index order, streamed in batches."""
    query = _scope_filter(user_id, agent_name, namespace)
    with translate_driver_errors():
        yield from _collection(store).find(
            query, {"_id": 0}, sort=_SCOPE_ORDER, batch_size=1000, collation=_SIMPLE
        )


def export_items(
    store: DataStore,
    user_id: str | None = None,
    agent_name: str | None = None,
    namespace: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Every item in the scope, in index order, as export records; streamed in batches."""
    for document in _documents_in_scope(store, user_id, agent_name, namespace):
        yield _item_record(document)


def export_lines(
    store: DataStore,
    user_id: str | None = None,
    agent_name: str | None = None,
    namespace: str | None = None,
) -> Iterator[tuple[str | None, str | None]]:
    """The export as JSON Lines text: ``(line, None)`` for each item, and ``(None, reason)`` for
    a document that breaks the schema so badly that it cannot be exported (a value that is not
    JSON, such as an ObjectId written by hand). The export goes on past such documents."""
    for document in _documents_in_scope(store, user_id, agent_name, namespace):
        try:
            line = json.dumps(_item_record(document), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, KeyError) as exc:
            scope = "/".join(str(document.get(name)) for name in _STRING_FIELDS)
            yield None, f"{scope}: cannot be exported ({type(exc).__name__}: {exc})"
        else:
            yield line, None


MAX_LINE_BYTES = 6 * _core.MAX_DOCUMENT_BYTES + 2**20
"""The longest line ``import`` reads whole, in bytes: more than any export line can be, so
that a longer one is rejected without being held. An item is at most one 16 MiB document,
and an export line spells no stored byte in more than six (``\\u0001`` for a control
character); the extra MiB is room for the line's field names and punctuation."""


@dataclass
class ImportReport:
    """What ``import_items`` did so far. Lines refused are reported one by one to
    ``on_reject`` as they are met, never kept here.

    ``lines_done`` is the number of the last input line up to which every line is written,
    rejected or skipped (at least the ``skip`` asked for): after a failure, the same input
    with ``skip=lines_done`` resumes the import (the batch that failed is written again,
    which is harmless: an import is idempotent). ``skipped`` counts the lines skipped.
    """

    imported: int = 0
    rejected: int = 0
    skipped: int = 0
    lines_done: int = 0


def _parse_date(text: object, name: str) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be an ISO 8601 string, not {type(text).__name__}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone (Z for UTC)")
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise ValueError(f"{name} {text!r} is outside the years 1 to 9999 in UTC") from None
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def _restore(store: DataStore, record: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """The filter and update that put an export record back exactly as it was."""
    if not isinstance(record, dict):
        raise TypeError("a line must hold a JSON object")
    missing = [name for name in _REQUIRED_FIELDS if name not in record]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    extra = sorted(set(record) - set(_EXPORT_FIELDS))
    if extra:
        raise ValueError(f"unknown field {', '.join(extra)}")
    scope = _core.Scope.of(record["userId"], record["agentName"], record["namespace"])
    key = _core.check_key(record["key"])
    paths, metadata_size = _core.check_metadata(record["metadata"] or {})
    created = _parse_date(record["createdAt"], "createdAt")
    updated = _parse_date(record["updatedAt"], "updatedAt")
    version = record.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63:
        raise ValueError(f"version must be an integer of at least 1, not {version!r}")
    expires = record.get("expiresAt")
    value = scope.encode_value(
        key, record["value"], metadata_size, store.max_value_bytes, expires=expires is not None
    )
    metadata = {path.removeprefix("metadata."): value for path, value in paths.items()}
    document = {
        "value": value,
        "metadata": metadata,
        "createdAt": created,
        "updatedAt": updated,
        "version": version,
    }
    if expires is None:
        return scope.item_filter(key), {"$set": document, "$unset": {"expiresAt": ""}}
    document["expiresAt"] = _parse_date(expires, "expiresAt")
    return scope.item_filter(key), {"$set": document}


_REASON_CHARS = 1_000  # a reason may quote the line: each report stays one readable line


def _reason(exc: Exception) -> str:
    """Why a line was rejected, in one line of bounded length."""
    if isinstance(exc, RecursionError):
        text = "nested too deeply to parse"
    elif isinstance(exc, (TypeError, ValueError)) and str(exc):
        text = str(exc)  # the store's own messages, and json's and the codec's, say it all
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.splitlines())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "..."


def import_items(
    store: DataStore,
    lines: Iterable[tuple[int, str | bytes | Exception]],
    batch_size: int = 500,
    on_reject: Callable[[int, str], None] | None = None,
    *,
    skip: int = 0,
    user_id: str | None = None,
    agent_name: str | None = None,
) -> Iterator[ImportReport]:
    """Write export records back, ``batch_size`` items per bulk write.

    ``lines`` gives (line number, text or UTF-8 bytes), or (line number, an exception) for a
    line the reader could not take (one too long to hold, say). Each item replaces its value,
    metadata and timestamps, so importing the same file twice gives the same state. The
    first ``skip`` lines are passed over unread. With ``user_id`` (and ``agent_name``), a line
    of any other user (or agent) is rejected, so a file said to be one user's export cannot
    change another's items.

    Any failure of one line, whatever the exception, rejects that line alone: it is passed to
    ``on_reject`` with its number and the reason, nothing about it is kept (memory stays
    flat), and the import goes on. Only the database stops an import: ``DataStoreUnavailable``
    or ``DataStoreError`` is raised, and the report last yielded, which is one object updated
    in place, says what was written and the ``lines_done`` to skip to resume. An exception
    raised by ``lines`` itself (the input broke off) is raised too, after the lines read before
    it are written. Yields the report first, before anything is read or written, then again
    after each batch: the last one is the total.
    """
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    if type(skip) is not int or skip < 0:
        raise ValueError(f"skip must be a whole number, not {skip!r}")
    _scope_filter(user_id, agent_name)  # checks the names, and that an agent has its user
    outside = None
    if user_id is not None:
        outside = f"outside --user {shlex.quote(user_id)}"
        if agent_name is not None:
            outside += f" --agent {shlex.quote(agent_name)}"
    report = ImportReport(lines_done=skip)
    yield report  # the one report, before anything can fail
    batch: list[UpdateOne] = []
    batch_lines: list[int] = []
    store.ensure_indexes()

    def reject(number: int, reason: str) -> None:
        report.rejected += 1
        if on_reject is not None:
            on_reject(number, reason)

    def write(requests: list[UpdateOne]) -> list[tuple[int, str]]:
        """One bulk write; the items the server refused, by index, with its reason."""
        with translate_driver_errors():
            try:
                _collection(store).bulk_write(requests, ordered=False)
            except BulkWriteError as exc:
                details = exc.details or {}
                failed = details.get("writeErrors") or []
                if not failed or details.get("writeConcernErrors"):
                    raise
                return [(e["index"], f"refused by the server: {e.get('errmsg')}") for e in failed]
        return []

    def flush(last_number: int) -> None:
        if batch:
            try:
                refused = write(batch)
            except (DataStoreUnavailable, DataStoreError):
                raise  # the database failed: the import stops here
            except Exception:
                # one item that validation let through and the driver cannot send (a bug):
                # write the batch one item at a time, so that only that item is lost
                refused = []
                for index, request in enumerate(batch):
                    try:
                        refused += [(index, reason) for _, reason in write([request])]
                    except (DataStoreUnavailable, DataStoreError):
                        raise
                    except Exception as exc:
                        refused.append((index, _reason(exc)))
            for index, reason in refused:
                reject(batch_lines[index], reason)
            report.imported += len(batch) - len(refused)
            batch.clear()
            batch_lines.clear()
        report.lines_done = max(report.lines_done, last_number)

    last_number = 0
    numbered = iter(lines)
    while True:
        try:
            entry = next(numbered, None)
        except Exception:
            flush(last_number)  # the input broke off: what was read before is good
            raise
        if entry is None:
            break
        number, raw = entry
        last_number = number
        if number <= skip:
            report.skipped += 1
            continue
        request = None
        try:
            if isinstance(raw, Exception):
                raise raw
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte order mark some editors add
            if text.strip(_JSON_WHITESPACE):
                item_filter, update = _restore(store, json.loads(text))
                if outside is not None and (
                    item_filter["userId"] != user_id
                    or (agent_name is not None and item_filter["agentName"] != agent_name)
                ):
                    raise ValueError(outside)
                request = UpdateOne(item_filter, update, upsert=True, collation=_SIMPLE)
        except Exception as exc:  # whatever one line does, it costs that line only
            reject(number, _reason(exc))
        if request is not None:
            batch.append(request)
            batch_lines.append(number)
            if len(batch) >= batch_size:
                flush(number)
                yield report
        elif not batch:
            report.lines_done = number
    flush(last_number)
    yield report


def doctor(store: DataStore, sample: int = 5) -> dict[str, Any]:
    """Check the store: round trip, server version, the unique and TTL indexes (and why an
    index with their keys does not serve, if one is there), and documents that break the
    schema (with a few of them).

    ``documents`` is ``estimated_document_count()``: read from the collection's metadata, so
    it costs nothing however large the collection, but it may be off after an unclean
    shutdown, and on a sharded cluster it counts orphaned documents too. The count of
    documents that break the schema is exact: a query that reads every document."""
    collection = _collection(store)
    with translate_driver_errors():
        collection.database.command("ping")  # selects the server and opens a connection
        started = time.perf_counter()
        collection.database.command("ping")
        latency_ms = (time.perf_counter() - started) * 1000
        version = collection.database.client.server_info().get("version", "unknown")
        indexes = collection.index_information()
        documents = collection.estimated_document_count()
        broken = collection.count_documents(_BROKEN_SCHEMA)
        examples = list(collection.find(_BROKEN_SCHEMA, {"value": 0, "metadata": 0}, limit=sample))
    unique = [name for name, spec in indexes.items() if _core.is_equivalent_index(spec)]
    expiry = [name for name, spec in indexes.items() if _core.is_expiry_index(spec)]
    return {
        "latency_ms": round(latency_ms, 3),
        "server_version": version,
        "unique_index": unique[0] if unique else None,
        "ttl_index": expiry[0] if expiry else None,
        "index_problems": index_conflicts(indexes),
        "documents": documents,
        "documents_estimated": True,
        "invalid_documents": broken,
        "invalid_sample": [{k: _text(v) for k, v in doc.items()} for doc in examples],
        "healthy": bool(unique) and bool(expiry) and broken == 0,
    }
