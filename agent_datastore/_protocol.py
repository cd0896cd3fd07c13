"""The store service's HTTP protocol, written once for the server and both remote proxies.

Every operation is ``POST /v1/<operation>`` with a JSON object body and the token in
``Authorization: Bearer <token>``. The user and the agent come from the token alone; the body
names the namespace and the operation's arguments, and any other field is refused. A success
is ``200 {"result": ...}``; a failure is ``{"error": {"type": ..., "message": ...}}`` with the
status of the exception a local proxy would raise (400 for ``TypeError`` and ``ValueError``,
409, 413, 429, 401, 500, 503), so a remote proxy raises the same exception.

Values are JSON as Python's ``json`` writes it, which is exact for everything a store takes:
integers of any size, floats (their shortest repr), ``$``/``.`` keys, any Unicode, ``null``.
Datetimes are ISO 8601 UTC strings with milliseconds, the stored precision.

The client's half checks arguments with the local proxy's own rules (``_core``, ``_codec``)
before anything is sent; the server's half checks them again, because a client can be anyone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeGuard

from . import _core, _filters
from ._exceptions import (
    DataStoreError,
    DataStoreUnavailable,
    HTTPException,
    TokenRejected,
    VersionConflict,
)
from ._items import Item, ItemInfo
from ._operations import FoundItem

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "OPERATIONS",
    "BatchTooLarge",
    "Calls",
    "Limits",
    "Request",
    "answer_of",
    "decode_error",
    "delete_many_calls",
    "dumps",
    "encode_error",
    "find_items_calls",
    "found_item_from_json",
    "found_item_to_json",
    "get_many_calls",
    "item_from_json",
    "item_info_from_json",
    "item_info_to_json",
    "item_to_json",
    "listing",
    "refresh_expiry_calls",
    "set_many_calls",
]

API_PREFIX = "/v1"


@dataclass(frozen=True, slots=True)
class Spec:
    """One operation's body fields (``required`` ones first) and whether sending it twice
    has the effect of sending it once, so that a lost connection may be retried."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    idempotent: bool

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(("namespace", *self.required, *self.optional))


OPERATIONS: dict[str, Spec] = {
    "get": Spec(("key",), (), idempotent=True),
    "get_item": Spec(("key",), (), idempotent=True),
    "set": Spec(("key", "value"), ("metadata", "ttl_ms", "if_version"), idempotent=False),
    "increment": Spec(("key",), ("amount", "ttl_ms"), idempotent=False),
    "delete": Spec(("key",), ("if_version",), idempotent=False),
    "list_keys": Spec(("limit",), ("prefix", "start_after"), idempotent=True),
    "list_items": Spec(("limit",), ("prefix", "start_after"), idempotent=True),
    "list_namespaces": Spec((), (), idempotent=True),
    "clear": Spec((), (), idempotent=False),
    "get_many": Spec(("keys",), (), idempotent=True),
    "delete_many": Spec(("keys",), (), idempotent=False),
    "set_many": Spec(("items",), ("metadata", "ttl_ms"), idempotent=False),
    # for the LangGraph store (integrations.langgraph): a search across the agent's
    # namespaces, and the expiry refresh of what it read (moving an expiry to now + its
    # length twice leaves it where once would)
    "find_items": Spec(("within", "limit"), ("keys", "filter", "offset"), idempotent=True),
    "refresh_expiry": Spec(("items", "ttl_field"), (), idempotent=True),
}


# The service's default limits, which a remote proxy assumes until a 413 answer tells it
# the service's own (``BatchTooLarge``).
DEFAULT_MAX_BATCH = 1_000
# A value may be up to 16 MiB of BSON, which is at most about as much JSON for typical data.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class Limits:
    """The limits of the service a remote proxy talks to, as far as it knows them: the
    defaults, then what the service said when it refused a request as too large."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class BatchTooLarge(HTTPException):
    """A 413 answer that says the service's limits, so that a batch can be split to fit and
    sent again (nothing of a refused request was written)."""

    def __init__(self, detail: str | None, max_batch: int, max_body_bytes: int) -> None:
        super().__init__(413, detail)
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes


@dataclass(frozen=True, slots=True)
class Request:
    """One call of the service: its operation and JSON body (``content``: the body already
    encoded, when the client built it piece by piece)."""

    operation: str
    body: dict[str, Any]
    content: bytes | None = None

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.operation}"

    @property
    def idempotent(self) -> bool:
        return OPERATIONS[self.operation].idempotent


# Made once: json.dumps with options builds an encoder on every call, which was 0.9 us of the
# 5.7 us a 1 KB answer took (benchmarks/service.py). An encoder keeps no state between calls.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(document: Any) -> bytes:
    """A JSON document as the protocol sends it: compact UTF-8, no NaN or infinity."""
    return _ENCODER.encode(document).encode("utf-8")


def ttl_ms(ttl: timedelta | None) -> int | None:
    """A checked ttl (whole milliseconds) as the protocol's integer."""
    return None if ttl is None else ttl // timedelta(milliseconds=1)


# ------------------------------------------------------------------------------- items


def _date_to_json(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _date_from_json(text: Any) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def _details_to_json(item: Item | ItemInfo) -> dict[str, Any]:
    return {
        "key": item.key,
        "metadata": item.metadata,
        "createdAt": _date_to_json(item.createdAt),
        "updatedAt": _date_to_json(item.updatedAt),
        "version": item.version,
        "expiresAt": _date_to_json(item.expiresAt),
    }


def _details_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": data["key"],
        "metadata": data["metadata"],
        "createdAt": _date_from_json(data["createdAt"]),
        "updatedAt": _date_from_json(data["updatedAt"]),
        "version": data["version"],
        "expiresAt": _date_from_json(data["expiresAt"]),
    }


def item_to_json(item: Item) -> dict[str, Any]:
    return {**_details_to_json(item), "value": item.value}


def item_from_json(data: Mapping[str, Any]) -> Item:
    return Item(value=data["value"], **_details_from_json(data))


def found_item_to_json(found: FoundItem) -> dict[str, Any]:
    return {"namespace": found.namespace, **item_to_json(found.item)}


def found_item_from_json(data: Mapping[str, Any]) -> FoundItem:
    return FoundItem(data["namespace"], item_from_json(data))


def item_info_to_json(info: ItemInfo) -> dict[str, Any]:
    return {**_details_to_json(info), "size": info.size}


def item_info_from_json(data: Mapping[str, Any]) -> ItemInfo:
    return ItemInfo(size=data["size"], **_details_from_json(data))


# ------------------------------------------------------------------------------ errors

# What a client is told of a failure of the database: never the database's own words,
# which can carry host names, user names or parts of other documents.
UNAVAILABLE_MESSAGE = "the store's database is unavailable; the same call may succeed later"
REFUSED_MESSAGE = "the store's database refused the operation"


def encode_error(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and body that tell a client about ``exc``."""
    error: dict[str, Any]
    if isinstance(exc, VersionConflict):
        error = {
            "type": "VersionConflict",
            "message": exc.detail,
            "key": exc.key,
            "expected_version": exc.expected_version,
            "current_version": exc.current_version,
        }
        return 409, {"error": error}
    if isinstance(exc, (TypeError, ValueError)):
        return 400, {"error": {"type": type(exc).__name__, "message": str(exc)}}
    if isinstance(exc, TokenRejected):
        return exc.status_code, {"error": {"type": "TokenRejected", "message": exc.detail}}
    if isinstance(exc, DataStoreUnavailable):
        return 503, {"error": {"type": "DataStoreUnavailable", "message": UNAVAILABLE_MESSAGE}}
    if isinstance(exc, HTTPException) and exc.status_code in (413, 429, 503):  # limits, busy
        return exc.status_code, {"error": {"type": "HTTPException", "message": exc.detail}}
    return 500, {"error": {"type": "DataStoreError", "message": REFUSED_MESSAGE}}


def decode_error(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Exception:
    """The exception a remote proxy raises for an error answer of the service."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    kind, message = error.get("type"), error.get("message")
    if not isinstance(message, str):
        message = None
    if status == 400 and kind in ("TypeError", "ValueError"):
        return (TypeError if kind == "TypeError" else ValueError)(message or "invalid request")
    if status == 409 and kind == "VersionConflict":
        try:
            return VersionConflict(
                str(error["key"]), int(error["expected_version"]), int(error["current_version"])
            )
        except (KeyError, TypeError, ValueError):
            pass
    if status in (401, 403):
        return TokenRejected(message, status)
    if status in (502, 503, 504):
        return DataStoreUnavailable(message or f"the store service answered {status}")
    if status == 500:
        return DataStoreError(message)
    limits = error.get("limits")
    if status == 413 and isinstance(limits, dict):
        max_batch, max_body_bytes = limits.get("max_batch"), limits.get("max_body_bytes")
        if _is_positive_int(max_batch) and _is_positive_int(max_body_bytes):
            return BatchTooLarge(message, max_batch, max_body_bytes)
    retry_after = (
        {"Retry-After": headers["Retry-After"]} if headers and "Retry-After" in headers else None
    )
    return HTTPException(status, message, retry_after)


def _is_positive_int(number: object) -> TypeGuard[int]:
    return isinstance(number, int) and not isinstance(number, bool) and number > 0


# ---------------------------------------------------------------------- client requests
#
# Each builder checks its arguments exactly as the local proxy does, so bad input raises the
# same TypeError or ValueError before anything is sent. The one check only the service can
# make is its store's own max_value_bytes, when it is below MongoDB's limit.


def _with_namespace(scope: _core.Scope, operation: str, **fields: Any) -> Request:
    body = {"namespace": scope.namespace}
    body.update((name, value) for name, value in fields.items() if value is not None)
    return Request(operation, body)


def get_request(scope: _core.Scope, key: object) -> Request:
    return _with_namespace(scope, "get", key=_core.check_key(key))


def get_item_request(scope: _core.Scope, key: object) -> Request:
    return _with_namespace(scope, "get_item", key=_core.check_key(key))


def _plain_metadata(metadata: object) -> tuple[dict[str, Any] | None, tuple[dict[str, Any], int]]:
    checked = _core.check_metadata(metadata)
    if metadata is None:
        return None, checked
    assert isinstance(metadata, Mapping)
    return {str.__str__(name): value for name, value in metadata.items()}, checked


def set_request(
    scope: _core.Scope,
    key: object,
    value: Any,
    metadata: object,
    ttl: object,
    if_version: object,
) -> Request:
    checked_key = _core.check_key(key)
    plain_metadata, checked_metadata = _plain_metadata(metadata)
    checked_ttl = _core.check_ttl(ttl)
    expected = _core.check_if_version(if_version)
    # the write the service will send, built only for its size checks: item and command
    scope.set_write(
        checked_key,
        value,
        checked_metadata,
        _core.utc_now(),
        ttl=checked_ttl,
        if_version=expected,
    )
    body = {"namespace": scope.namespace, "key": checked_key, "value": value}
    if plain_metadata is not None:
        body["metadata"] = plain_metadata
    if checked_ttl is not None:
        body["ttl_ms"] = ttl_ms(checked_ttl)
    if expected is not None:
        body["if_version"] = expected
    return Request("set", body)


def increment_request(scope: _core.Scope, key: object, amount: object, ttl: object) -> Request:
    return _with_namespace(
        scope,
        "increment",
        key=_core.check_key(key),
        amount=_core.check_amount(amount),
        ttl_ms=ttl_ms(_core.check_ttl(ttl)),
    )


def delete_request(scope: _core.Scope, key: object, if_version: object) -> Request:
    return _with_namespace(
        scope, "delete", key=_core.check_key(key), if_version=_core.check_if_version(if_version)
    )


def listing_request(
    scope: _core.Scope, operation: str, prefix: str | None, limit: int, start_after: str | None
) -> Request:
    """One page of ``list_keys`` or ``list_items``; the caller has checked the arguments."""
    return _with_namespace(scope, operation, prefix=prefix, limit=limit, start_after=start_after)


# ---------------------------------------------------------------------- client answers


def answer_of(status: int, content: bytes, headers: Mapping[str, str] | None = None) -> Any:
    """A service's answer document (``{"result": ...}`` and what the operation adds), or the
    exception it stands for, raised."""
    try:
        document = json.loads(content) if content else None
    except (ValueError, RecursionError):
        document = None
    if status == 200:
        if not isinstance(document, dict) or "result" not in document:
            raise _not_the_protocol()
        return document
    raise decode_error(status, document, headers)


def _not_the_protocol() -> DataStoreError:
    return DataStoreError("the store service sent an answer that is not the protocol's")


Calls = Generator[Request, dict[str, Any], Any]
"""A proxy call that takes several requests: each request is yielded, and its answer
document sent back in (or, thrown in, the error it was answered with); the call's result is
returned at the end. The remote proxies drive them (``_drive``)."""


def listing(
    scope: _core.Scope, operation: str, prefix: object, limit: object, start_after: object
) -> Calls:
    """A ``list_keys`` or ``list_items`` call as the requests it needs.

    The service returns at most ``KEY_PAGE_SIZE`` (1,000) results per request, and a
    ``list_items`` page ends early (``"more": true``) when its answer would pass the
    service's byte budget; the listing goes on after the last key seen. The arguments are
    checked, as the local proxy checks them, before the first request.
    """
    checked_prefix = _core.check_prefix(prefix)
    checked_limit = _core.check_limit(limit)  # 0: no limit
    start = _core.check_prefix(start_after, "start_after")
    results: list[Any] = []
    while True:
        remaining = checked_limit - len(results) if checked_limit else _core.KEY_PAGE_SIZE
        size = min(_core.KEY_PAGE_SIZE, remaining)
        answer = yield listing_request(scope, operation, checked_prefix, size, start)
        page, more = answer["result"], answer.get("more") is True
        if not isinstance(page, list) or (more and not page):
            raise _not_the_protocol()
        results.extend(page)
        if (len(page) < size and not more) or len(results) == checked_limit:
            return results
        start = page[-1] if operation == "list_keys" else page[-1]["key"]


def get_many_calls(scope: _core.Scope, keys: object, limits: Limits) -> Calls:
    """A ``get_many`` call as the requests it needs: batches of at most the service's
    ``max_batch`` keys, and for each, one more request for the keys it names as
    ``remaining`` when its answer would have passed the service's byte budget, until none
    remain. Returns the values found, in the order asked, as the local proxy does."""
    checked = _core.check_keys(keys)
    unique = list(dict.fromkeys(checked))
    found: dict[str, Any] = {}
    done = 0
    while done < len(unique):
        batch = unique[done : done + limits.max_batch]
        pending = batch
        try:
            while pending:
                answer = yield _with_namespace(scope, "get_many", keys=pending)
                values, remaining = answer["result"], answer.get("remaining", [])
                # each answer must make progress, or a broken service would loop forever
                if (
                    not isinstance(values, dict)
                    or not isinstance(remaining, list)
                    or not set(remaining) < set(pending)
                ):
                    raise _not_the_protocol()
                found.update(values)
                pending = remaining
        except BatchTooLarge as exc:
            if exc.max_batch >= len(batch):
                raise
            limits.max_batch = exc.max_batch  # the service's own limit: split and resend
            continue
        done += len(batch)
    return {key: found[key] for key in checked if key in found}


def delete_many_calls(scope: _core.Scope, keys: object, limits: Limits) -> Calls:
    """A ``delete_many`` call as the requests it needs: the keys are checked as the local
    proxy checks them, then sent in batches of at most the service's ``max_batch``, each
    deleted before the next is sent; returns the number deleted."""
    checked = _core.check_keys(keys, "delete_many")
    return (
        yield from _counted_in_batches(
            checked, limits, lambda batch: _with_namespace(scope, "delete_many", keys=batch)
        )
    )


def _counted_in_batches(
    entries: list[Any], limits: Limits, request: Callable[[list[Any]], Request]
) -> Calls:
    """``entries`` sent as ``request``s of at most the service's ``max_batch`` (learnt from a
    413: split and send again; nothing of a refused request was done), each done before the
    next is sent and answered with the count of its entries that it changed; their sum."""
    total = done = 0
    while done < len(entries):
        batch = entries[done : done + limits.max_batch]
        try:
            answer = yield request(batch)
        except BatchTooLarge as exc:
            if exc.max_batch >= len(batch):
                raise
            limits.max_batch = exc.max_batch  # the service's own limit: split and resend
            continue
        count = answer["result"]
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= len(batch):
            raise _not_the_protocol()
        total += count
        done += len(batch)
    return total


def set_many_calls(
    scope: _core.Scope, items: object, metadata: object, ttl: object, limits: Limits
) -> Calls:
    """A ``set_many`` call as the requests it needs: every item is checked first, with the
    local proxy's rules, then the items are sent in batches that fit the service's
    ``max_batch`` and ``max_body_bytes``; returns the number stored.

    Each batch is written before the next is sent, so when one fails the batches before it
    stay written (the local proxy's sub-batches behave the same)."""
    checked_items = _core.check_items(items)
    plain_metadata, checked_metadata = _plain_metadata(metadata)
    checked_ttl = _core.check_ttl(ttl)
    # each item's write as the service will send it, built only for its size checks (item and
    # command), so that no batch is sent when a later item would be refused
    writer = scope.set_writer(checked_metadata, _core.utc_now(), ttl=checked_ttl)
    pieces: list[bytes] = []
    for raw_key, value in checked_items.items():
        key = _core.check_key(raw_key)
        writer(key, value, _core.MAX_DOCUMENT_BYTES)
        pieces.append(dumps(key) + b":" + dumps(value))
    if not pieces:
        return 0
    fields = {
        "namespace": scope.namespace,
        "metadata": plain_metadata,
        "ttl_ms": ttl_ms(checked_ttl),
    }
    head = dumps({name: value for name, value in fields.items() if value is not None})
    stored = done = 0
    while done < len(pieces):
        batch: list[bytes] = []
        size = len(head) + len(b',"items":{}')
        for piece in pieces[done : done + limits.max_batch]:
            size += len(piece) + 1
            if batch and size > limits.max_body_bytes:
                break
            batch.append(piece)
        content = head[:-1] + b',"items":{' + b",".join(batch) + b"}}"
        try:
            answer = yield Request("set_many", {}, content)
        except BatchTooLarge as exc:
            if exc.max_batch >= len(batch) and exc.max_body_bytes >= len(content):
                raise
            if len(batch) == 1 and exc.max_body_bytes < len(content):
                raise  # one item alone is over the service's body limit
            limits.max_batch, limits.max_body_bytes = exc.max_batch, exc.max_body_bytes
            continue
        stored += int(answer["result"])
        done += len(batch)
    return stored


# ------------------------------------------------------------- for the LangGraph store
#
# No proxy method of its own: the LangGraph store (integrations.langgraph) drives these with
# the remote proxy's ``_drive``, as it runs ``_operations.find_items`` and ``refresh_expiry``
# on a local store.


def _found_page(page: object, size: int, more: bool) -> list[FoundItem]:
    """A ``find_items`` page as found items; the protocol error for anything else, or for a
    page that is longer than asked or says there is more without making progress."""
    if not isinstance(page, list) or len(page) > size or (more and not page):
        raise _not_the_protocol()
    try:
        return [found_item_from_json(entry) for entry in page]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _not_the_protocol() from None


def _find_pages(fields: dict[str, Any], limit: int, offset: int) -> Calls:
    """The found items from ``offset`` on, at most ``limit`` (0: all), as the requests they
    take: pages of at most ``KEY_PAGE_SIZE``, each ending early (``"more": true``) when its
    answer would pass the service's byte budget; the next goes on at ``offset`` plus what
    came back so far."""
    results: list[FoundItem] = []
    while True:
        remaining = limit - len(results) if limit else _core.KEY_PAGE_SIZE
        size = min(_core.KEY_PAGE_SIZE, remaining)
        body = {**fields, "limit": size, "offset": offset + len(results)}
        answer = yield Request("find_items", body)
        more = answer.get("more") is True
        page = _found_page(answer["result"], size, more)
        results.extend(page)
        if (len(page) < size and not more) or len(results) == limit:
            return results


def find_items_calls(
    scope: _core.Scope,
    *,
    within: object,
    keys: object,
    value_filter: object,
    limit: object,
    offset: object,
    limits: Limits,
) -> Calls:
    """An ``_operations.find_items`` call as the requests it needs; returns the same list of
    ``FoundItem``. The arguments are checked with the local rules before the first request
    (the filter translated, and the translation dropped: the service makes its own).

    Pages as ``_find_pages``. More ``keys`` than the service's ``max_batch`` (learnt from a
    413 as ``get_many_calls`` does) are asked for in batches, each from the start and for at
    most ``offset + limit`` items; the batches' items, which are distinct, are merged in the
    service's order (namespace, then key: Python's order of ``str`` is the UTF-8 byte order of
    the index) and sliced as one search would have been."""
    _core.namespace_condition(scope.namespace, within)
    checked_keys = None if keys is None else _core.check_keys(keys, "find_items")
    _filters.value_query(value_filter)
    checked_limit = _core.check_limit(limit)  # 0: no limit
    checked_offset = _core.check_offset(offset)
    fields: dict[str, Any] = {"namespace": scope.namespace, "within": within}
    if value_filter is not None:
        fields["filter"] = value_filter
    if checked_keys is None:
        return (yield from _find_pages(fields, checked_limit, checked_offset))
    if not checked_keys:
        return []
    while True:
        if len(checked_keys) <= limits.max_batch:
            try:
                return (
                    yield from _find_pages(
                        {**fields, "keys": checked_keys}, checked_limit, checked_offset
                    )
                )
            except BatchTooLarge as exc:
                if exc.max_batch >= len(checked_keys):
                    raise
                limits.max_batch = exc.max_batch  # the service's own limit: split
                continue
        found: list[FoundItem] = []
        wanted = checked_offset + checked_limit if checked_limit else 0
        try:
            for start in range(0, len(checked_keys), limits.max_batch):
                batch = checked_keys[start : start + limits.max_batch]
                found += yield from _find_pages({**fields, "keys": batch}, wanted, 0)
        except BatchTooLarge as exc:
            if exc.max_batch >= limits.max_batch:
                raise
            limits.max_batch = exc.max_batch
            continue
        found.sort(key=lambda entry: (entry.namespace, entry.item.key))
        end = checked_offset + checked_limit if checked_limit else None
        return found[checked_offset:end]


def refresh_expiry_calls(
    scope: _core.Scope, items: object, ttl_field: object, limits: Limits
) -> Calls:
    """An ``_operations.refresh_expiry`` call as the requests it needs: the ``(namespace,
    key)`` pairs are checked with the local rules, then sent in batches of at most the
    service's ``max_batch`` (learnt from a 413, as ``delete_many_calls`` does); returns the
    number of items whose expiry moved."""
    by_namespace = _core.check_found_items(items)
    name = _core.check_metadata_name(ttl_field, "ttl_field")
    pairs = [[namespace, key] for namespace, keys in by_namespace.items() for key in keys]
    return (
        yield from _counted_in_batches(
            pairs,
            limits,
            lambda batch: Request("refresh_expiry", {"items": batch, "ttl_field": name}),
        )
    )
