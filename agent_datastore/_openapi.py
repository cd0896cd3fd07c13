"""The OpenAPI 3.1 document of the store service (``GET /v1/openapi.json``), made from the
protocol's operations (``_protocol.OPERATIONS``). The probes and ``/metrics`` stay out of it:
it describes the ``/v1`` protocol, where every route takes a store token."""

from __future__ import annotations

from typing import Any

from . import _core, _protocol

__all__ = ["openapi_document"]

_ANY: dict[str, Any] = {"description": "Any JSON value."}
_NAME = {"type": "string", "minLength": 1}
_DATE = {"type": "string", "format": "date-time"}
_INT = {"type": "integer"}
_FIELDS: dict[str, dict[str, Any]] = {
    "namespace": {**_NAME, "default": "default"},
    "key": _NAME,
    "value": _ANY,
    "metadata": {"type": "object", "additionalProperties": _ANY},
    "ttl_ms": {"type": "integer", "minimum": 1},
    "if_version": {"type": "integer", "minimum": 0},
    "amount": _INT,
    "limit": {"type": "integer", "minimum": 1, "maximum": _core.KEY_PAGE_SIZE},
    "prefix": {"type": "string"},
    "start_after": {"type": "string"},
    "keys": {"type": "array", "items": _NAME},
    "items": {"type": "object", "propertyNames": {"minLength": 1}, "additionalProperties": _ANY},
    "within": {"enum": list(_core.WITHIN)},
    "filter": {
        "type": "object",
        "description": "A LangGraph search filter on the item's value, translated by the service.",
    },
    "offset": {"type": "integer", "minimum": 0},
    "ttl_field": _NAME,
}
# Fields that mean something else in one operation than in the others.
_OWN_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "refresh_expiry": {
        "items": {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [_NAME, _NAME],
                "minItems": 2,
                "maxItems": 2,
                "description": "[namespace, key]",
            },
        }
    },
}
_DETAILS = {
    "key": {"type": "string"},
    "metadata": {"type": "object"},
    "createdAt": _DATE,
    "updatedAt": _DATE,
    "version": _INT,
    "expiresAt": {"oneOf": [_DATE, {"type": "null"}]},
}
_ITEM = {
    "type": "object",
    "properties": {**_DETAILS, "value": _ANY},
    "required": [*_DETAILS, "value"],
}
_FOUND_ITEM = {
    "type": "object",
    "properties": {"namespace": {"type": "string"}, **_DETAILS, "value": _ANY},
    "required": ["namespace", *_DETAILS, "value"],
}
_ITEM_INFO = {
    "type": "object",
    "properties": {**_DETAILS, "size": _INT},
    "required": [*_DETAILS, "size"],
}
_RESULTS: dict[str, dict[str, Any]] = {
    "get": {
        "type": "object",
        "properties": {"found": {"type": "boolean"}, "value": _ANY},
        "required": ["found", "value"],
    },
    "get_item": {"oneOf": [_ITEM, {"type": "null"}]},
    "set": {"type": "null"},
    "increment": _INT,
    "delete": {"type": "boolean"},
    "list_keys": {"type": "array", "items": {"type": "string"}},
    "list_items": {"type": "array", "items": _ITEM_INFO},
    "list_namespaces": {"type": "array", "items": {"type": "string"}},
    "clear": _INT,
    "get_many": {"type": "object", "additionalProperties": _ANY},
    "delete_many": _INT,
    "set_many": _INT,
    "find_items": {"type": "array", "items": _FOUND_ITEM},
    "refresh_expiry": _INT,
}
_SUMMARIES = {
    "get": "The value under a key (found: false when there is none).",
    "get_item": "An item with its metadata, timestamps, version and expiry; null if absent.",
    "set": "Store a value, merging metadata; ttl_ms expires it; if_version compares and sets.",
    "increment": "Add amount to an integer (0 when absent) and return the new value.",
    "delete": "Delete a key; true if it existed. if_version deletes only at that version.",
    "list_keys": "One page of keys, sorted, after start_after.",
    "list_items": "One page of item details (no values), sorted, after start_after.",
    "list_namespaces": "The namespaces in which the agent has keys.",
    "clear": "Delete every key of the namespace; the number deleted.",
    "get_many": "The values of those keys that exist, in the order asked.",
    "delete_many": "Delete those keys that exist; the number deleted.",
    "set_many": "Store several items at once; the number stored.",
    "find_items": (
        "One page of the agent's items in the namespace, below it, or anywhere (within), "
        "by namespace then key, matching keys and filter, after offset (LangGraph search)."
    ),
    "refresh_expiry": (
        "Restart the expiry of those [namespace, key] items whose metadata[ttl_field] holds "
        "their length in milliseconds; the number refreshed (LangGraph refresh_ttl)."
    ),
}
# What a get_many or list_items answer adds when it would pass the service's answer budget.
_PAGING: dict[str, dict[str, Any]] = {
    "get_many": {
        "remaining": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Keys asked and not answered yet: ask for them again.",
        }
    },
    "list_items": {
        "more": {
            "type": "boolean",
            "description": "The page ended early: the listing goes on after its last key.",
        }
    },
    "find_items": {
        "more": {
            "type": "boolean",
            "description": "The page ended early: the search goes on at offset + its length.",
        }
    },
}
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            "required": ["type", "message"],
        }
    },
    "required": ["error"],
}
_ERROR_STATUSES = {
    "400": "Bad input: error.type is TypeError or ValueError, as a local proxy raises.",
    "401": "The token is missing, malformed, tampered with or expired.",
    "409": "if_version did not match: key, expected_version and current_version say why.",
    "413": (
        "The body or the batch is over the service's limit (error.limits says them), or the "
        "request would need more than the service's whole in-flight budget."
    ),
    "429": "Over the token's rate limit; Retry-After says when to come back.",
    "500": "The database refused the operation.",
    "503": (
        "The database is unavailable, or the service is busy (Retry-After says when to come "
        "back); the same call may succeed later."
    ),
}


def _operation_document(name: str) -> dict[str, Any]:
    spec = _protocol.OPERATIONS[name]
    body = {
        "type": "object",
        "properties": {
            field: _OWN_FIELDS.get(name, {}).get(field, _FIELDS[field])
            for field in ("namespace", *spec.required, *spec.optional)
        },
        "required": list(spec.required),
        "additionalProperties": False,
    }
    result = {
        "type": "object",
        "properties": {"result": _RESULTS[name], **_PAGING.get(name, {})},
        "required": ["result"],
    }
    responses: dict[str, Any] = {
        "200": {"description": "Done.", "content": {"application/json": {"schema": result}}}
    }
    for status, description in _ERROR_STATUSES.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": _ERROR}},
        }
    return {
        "post": {
            "operationId": name,
            "summary": _SUMMARIES[name],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body}},
            },
            "responses": responses,
            "security": [{"token": []}],
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the service."""
    from . import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agent-datastore store service",
            "version": __version__,
            "description": (
                "Every operation of a data_store proxy. The user and agent come from the "
                "bearer token, issued by the runtime with agent_datastore.issue_token."
            ),
        },
        "paths": {
            f"{_protocol.API_PREFIX}/{name}": _operation_document(name)
            for name in _protocol.OPERATIONS
        },
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
        },
    }
