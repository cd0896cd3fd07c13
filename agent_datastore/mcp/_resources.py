"""The resources, read-only: a listing of keys per namespace and an item per key.

A namespace or a key may hold any Unicode, '/' included, so each is percent-encoded whole
(every byte of its UTF-8 but the unreserved characters) into one path segment of the URI;
reading decodes it back exactly, and refuses a segment that is not valid UTF-8.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import quote, unquote

import mcp_types as types

from .._serving import json_pieces
from ._tools import MAX_BATCH, Proxy, item_to_json

__all__ = [
    "ITEM_TEMPLATE",
    "LISTING_TEMPLATE",
    "ResourceNotFound",
    "item_uri",
    "listing_uri",
    "read",
    "resources",
    "templates",
]

LISTING_TEMPLATE = "datastore://namespaces/{namespace}/keys"
ITEM_TEMPLATE = "datastore://namespaces/{namespace}/items/{key}"
_LISTING = re.compile(r"datastore://namespaces/([^/]+)/keys")
_ITEM = re.compile(r"datastore://namespaces/([^/]+)/items/([^/]+)")
JSON_TYPE = "application/json"


class ResourceNotFound(LookupError):
    """A URI that names no resource of this server, or an item that does not exist."""


def _segment(text: str) -> str:
    return quote(text, safe="")


def listing_uri(namespace: str) -> str:
    """The URI of the listing of ``namespace``'s keys."""
    return f"datastore://namespaces/{_segment(namespace)}/keys"


def item_uri(namespace: str, key: str) -> str:
    """The URI of the item ``key`` in ``namespace``."""
    return f"datastore://namespaces/{_segment(namespace)}/items/{_segment(key)}"


def _decoded(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise ResourceNotFound("the URI's percent-encoding is not UTF-8") from None


def templates() -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(
        resource_templates=[
            types.ResourceTemplate(
                name="keys",
                uri_template=LISTING_TEMPLATE,
                description=f"The first {MAX_BATCH:,} keys of a namespace, in order, as JSON "
                "(the list_keys tool pages through more). The namespace is "
                "percent-encoded.",
                mime_type=JSON_TYPE,
            ),
            types.ResourceTemplate(
                name="item",
                uri_template=ITEM_TEMPLATE,
                description="One item as JSON: key, value, metadata, createdAt, updatedAt, "
                "version and expiresAt. Namespace and key are percent-encoded (a '/' in a "
                "key is %2F).",
                mime_type=JSON_TYPE,
            ),
        ]
    )


async def resources(proxy: Proxy) -> types.ListResourcesResult:
    """One listing per namespace that holds items."""
    return types.ListResourcesResult(
        resources=[
            types.Resource(
                name=f"keys in {namespace}",
                uri=listing_uri(namespace),
                description=f"The keys of namespace {namespace!r}.",
                mime_type=JSON_TYPE,
            )
            for namespace in await proxy.list_namespaces()
        ]
    )


async def read(proxy: Proxy, uri: str) -> types.ReadResourceResult:
    """The listing or the item ``uri`` names, through ``proxy``'s user and agent."""
    content: Any
    listing = _LISTING.fullmatch(uri)
    item = _ITEM.fullmatch(uri)
    if listing is not None:
        scoped = proxy.use_namespace(_decoded(listing[1]))
        keys = await scoped.list_keys(limit=MAX_BATCH + 1)
        content = {
            "namespace": scoped.namespace,
            "keys": keys[:MAX_BATCH],
            "more": len(keys) > MAX_BATCH,
        }
    elif item is not None:
        scoped = proxy.use_namespace(_decoded(item[1]))
        key = _decoded(item[2])
        found = await scoped.get_item(key)
        if found is None:
            raise ResourceNotFound(f"no item {key!r} in namespace {scoped.namespace!r}")
        # a value of up to 16 MiB: encoded in pieces in a worker thread, as the store service
        # encodes a large answer, so that other callers are served meanwhile
        pieces = await asyncio.to_thread(json_pieces, item_to_json(found))
        text = b"".join(pieces).decode("utf-8")
        return _contents(uri, text)
    else:
        raise ResourceNotFound(
            f"no such resource; the URIs are {LISTING_TEMPLATE} and {ITEM_TEMPLATE}"
        )
    return _contents(uri, json.dumps(content, ensure_ascii=False))


def _contents(uri: str, text: str) -> types.ReadResourceResult:
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type=JSON_TYPE, text=text)]
    )
