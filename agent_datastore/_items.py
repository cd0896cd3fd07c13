"""What ``get_item`` and ``list_items`` return: an item with its details, read-only.

The field names are those of the stored document and of the export format (``createdAt``,
not ``created_at``), so ``to_dict()`` gives the same keys a user sees in MongoDB and in an
export.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from . import _codec, _core
from ._exceptions import DataStoreError

__all__ = ["Item", "ItemInfo", "item_from_document", "item_info_from_document"]


@dataclass(frozen=True, slots=True)
class Item:
    """One item as ``get_item`` returns it.

    ``createdAt`` is when the item was created (or created again after it expired),
    ``updatedAt`` its last write, both timezone-aware UTC with millisecond precision.
    ``version`` is 1 on creation and goes up by one with every write. ``expiresAt`` is when
    the item expires, ``None`` for an item that does not.
    """

    key: str
    value: Any
    metadata: dict[str, Any]
    createdAt: datetime
    updatedAt: datetime
    version: int
    expiresAt: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The item as a plain dict with the same field names."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """One item as ``list_items`` returns it: its details without the value, and ``size``,
    the bytes its document takes in MongoDB (value, metadata and fields included)."""

    key: str
    metadata: dict[str, Any]
    createdAt: datetime
    updatedAt: datetime
    version: int
    expiresAt: datetime | None
    size: int

    def to_dict(self) -> dict[str, Any]:
        """The details as a plain dict with the same field names."""
        return asdict(self)


ITEM_PROJECTION: dict[str, Any] = {
    "_id": 0,
    "key": 1,
    "value": 1,
    "metadata": 1,
    "createdAt": 1,
    "updatedAt": 1,
    "version": 1,
    "expiresAt": 1,
}
ITEM_INFO_PROJECTION: dict[str, Any] = {
    **{name: flag for name, flag in ITEM_PROJECTION.items() if name != "value"},
    "size": {"$bsonSize": "$$ROOT"},
}


_Details = tuple[str, dict[str, Any], datetime, datetime, int, "datetime | None"]


def _details(document: Mapping[str, Any]) -> _Details:
    """key, metadata, createdAt, updatedAt, version and expiresAt, in the fields' order (a
    tuple, passed on by position: a dict and keyword arguments cost more, on every call)."""
    key = document.get("key")
    try:
        created, updated = document["createdAt"], document["updatedAt"]
        if not isinstance(created, datetime) or not isinstance(updated, datetime):
            raise ValueError("createdAt or updatedAt is not a date")
        expires = document.get("expiresAt")
        expires = _core.as_utc(expires) if isinstance(expires, datetime) else None
        metadata = document.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise ValueError("metadata is not a document")
        return (
            key,  # type: ignore[return-value]
            {name: _codec.decode(value) for name, value in metadata.items()},
            _core.as_utc(created),
            _core.as_utc(updated),
            _core.version_of(document),
            expires,
        )
    except (KeyError, ValueError) as exc:
        # imported from another source or edited by hand: `agent-datastore doctor` finds these
        raise DataStoreError(f"item {key!r} has a malformed document ({exc})") from None


def item_from_document(document: Mapping[str, Any]) -> Item:
    value = _codec.decode(document.get("value"))  # first, as ever: its errors come first
    key, metadata, created, updated, version, expires = _details(document)
    return Item(key, value, metadata, created, updated, version, expires)


def item_info_from_document(document: Mapping[str, Any]) -> ItemInfo:
    return ItemInfo(*_details(document), int(document["size"]))
