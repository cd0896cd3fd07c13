"""Helpers for the tests: snapshots of a store, its documents, a closed port."""

from __future__ import annotations

import os
import socket
import sys
from datetime import datetime, timedelta, timezone
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


class MovableClock:
    """A store clock that tests move forward: real time (or a fixed start) plus an offset.

    Following real time keeps timestamps increasing as they do in production; a ``frozen``
    clock makes every call see the same moment until ``advance``. A frozen clock starts a day
    ahead, so the embedded fake, which deletes TTL-expired documents by the real clock, never
    deletes one of its items by itself: expiry is then decided by the store alone.
    """

    def __init__(self, *, frozen: bool = False) -> None:
        self._start: datetime | None = None
        self.offset = timedelta(0)
        if frozen:
            self.freeze()

    def freeze(self) -> None:
        """Jump a day ahead and stand still there."""
        self._start = datetime.now(timezone.utc) + timedelta(days=1)

    def __call__(self) -> datetime:
        base = self._start if self._start is not None else datetime.now(timezone.utc)
        return base + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def interruptible(command: list[str]) -> list[str]:
    """``command`` with SIGINT back at its default action. A test run started with SIGINT
    ignored (nohup, a background job, some CI runners) passes that on to every child, which
    then never sees the Ctrl-C a test sends; a disposition reset before ``exec`` survives it
    (unlike ``preexec_fn``, this is safe in a process with threads)."""
    return [sys.executable, "-c", _DEFAULT_SIGINT, *command]
