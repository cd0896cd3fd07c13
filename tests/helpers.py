"""Helpers for the tests: snapshots of a store, its documents, a closed port."""

from __future__ import annotations

import os
import socket
from typing import Any

import bson

from agent_datastore import DataStore

MONGODB_URI = os.environ.get("MONGODB_URI")
REAL_SERVER_SKIP = (
    "MONGODB_URI is not set: these contract tests ran on the embedded store only; "
    "set MONGODB_URI to a disposable MongoDB server to run them against it as well"
)


def snapshot(store: DataStore) -> list[bytes]:
    """Every document of the store, as BSON bytes, in _id order: equal snapshots mean the
    contents are byte-for-byte unchanged."""
    return [bson.encode(doc) for doc in store.collection.find({}).sort("_id", 1)]


def documents(store: DataStore, **query: Any) -> list[dict[str, Any]]:
    return list(store.collection.find(query, {"_id": 0}).sort("key", 1))


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
