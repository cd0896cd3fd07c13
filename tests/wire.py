"""A MongoDB wire-protocol test server for the store, built on mockupdb.

The store talks to it through a real ``pymongo.MongoClient``. The server presents itself as the
primary of a one-member replica set (so pymongo retries reads and writes as it would in
production), records every command it receives, answers each like an empty MongoDB would, and
can be told to misbehave on the next commands: hang up, never answer, or fail with a given
server error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bson.int64 import Int64
from mockupdb import MockupDB, Request

import agent_datastore
from agent_datastore import DataStore

# Error codes a MongoDB 4.4+ server labels RetryableWriteError when a retryable write fails with
# them; pymongo retries a write on the label, not the code.
_RETRYABLE_WRITE_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
_WRITES = {"update", "delete", "insert", "findAndModify"}

# The handshake, answered by mockupdb's own responder, and the client's housekeeping, answered
# with a plain ok; neither is a command of the store, so neither is recorded.
_HANDSHAKE = {"ismaster", "isMaster", "hello"}
_HOUSEKEEPING = {"endSessions", "ping", "buildInfo", "killCursors"}


@dataclass
class Fault:
    """What the server does to the next matching command instead of answering it."""

    kind: str  # "hangup", "hang", "hold", "error", "write_error", "write_concern_error"
    code: int = 0
    message: str = ""
    index: int = 0  # for write_error: which statement of a batch fails


@dataclass
class WireServer:
    server: MockupDB
    commands: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    find_batches: list[list[dict[str, Any]]] = field(default_factory=list)
    # the batches of the next aggregate's cursor: the first in its reply, the others one per
    # getMore
    aggregate_batches: list[list[dict[str, Any]]] = field(default_factory=list)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    deleted: int = 0
    # findAndModify replies: the document as it was before, None for none
    found_and_modified: list[dict[str, Any] | None] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _hanging: list[Request] = field(default_factory=list)
    _held: list[tuple[Request, dict[str, Any]]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.server.address_string}/?replicaSet=rs"

    def connect(self, **options: Any) -> DataStore:
        # generous: after a failover error pymongo must find the primary again, and a loaded
        # CI machine can be slow to
        options.setdefault("serverSelectionTimeoutMS", 10_000)
        return agent_datastore.connect(self.uri, **options)

    def fail_next(self, command: str, *faults: Fault) -> None:
        with self._lock:
            self.faults.setdefault(command, []).extend(faults)

    def held(self) -> int:
        """How many commands are waiting for ``release_held``."""
        with self._lock:
            return len(self._held)

    def release_held(self) -> None:
        """Answer every held command, as the server would have."""
        with self._lock:
            held, self._held = self._held, []
        for request, doc in held:
            request.reply(self._answer(next(iter(doc)), doc))

    def names(self) -> list[str]:
        return [next(iter(doc)) for doc in self.commands]

    def take(self) -> list[dict[str, Any]]:
        """The commands received since the last call, oldest first."""
        with self._lock:
            taken, self.commands = self.commands, []
        return taken

    def handle(self, request: Request) -> bool:
        doc = dict(request.doc)
        name = next(iter(doc))
        if name in _HANDSHAKE:
            return False
        if name in _HOUSEKEEPING:
            request.ok()
            return True
        with self._lock:
            self.commands.append(doc)
            queue = self.faults.get(name)
            fault = queue.pop(0) if queue else None
        if fault is not None:
            return self._misbehave(request, fault, doc)
        request.reply(self._answer(name, doc))
        return True

    def _misbehave(self, request: Request, fault: Fault, doc: dict[str, Any]) -> bool:
        if fault.kind == "hangup":
            request.hangup()
        elif fault.kind == "hang":
            self._hanging.append(request)  # never answered
        elif fault.kind == "hold":
            with self._lock:
                self._held.append((request, doc))  # answered by release_held()
        elif fault.kind == "error":
            reply: dict[str, Any] = {"ok": 0, "code": fault.code, "errmsg": fault.message}
            if self._labels_retryable(doc, fault.code):
                reply["errorLabels"] = ["RetryableWriteError"]
            request.reply(reply)
        elif fault.kind == "write_error":
            reply = self._answer(next(iter(doc)), doc)
            reply["writeErrors"] = [
                {"index": fault.index, "code": fault.code, "errmsg": fault.message}
            ]
            request.reply(reply)
        elif fault.kind == "write_concern_error":
            reply = self._answer(next(iter(doc)), doc)
            reply["writeConcernError"] = {"code": fault.code, "errmsg": fault.message}
            if self._labels_retryable(doc, fault.code):
                reply["errorLabels"] = ["RetryableWriteError"]
            request.reply(reply)
        else:  # pragma: no cover - a typo in a test
            raise ValueError(fault.kind)
        return True

    def _cursor_id(self) -> Int64:
        """An open cursor while batches remain, else the closed cursor's 0."""
        return Int64(1 if self.aggregate_batches else 0)

    @staticmethod
    def _labels_retryable(doc: dict[str, Any], code: int) -> bool:
        is_retryable_write = next(iter(doc)) in _WRITES and "txnNumber" in doc
        return is_retryable_write and code in _RETRYABLE_WRITE_CODES

    def _answer(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        if name == "getMore":
            namespace = f"{doc.get('$db')}.{doc['collection']}"
            batch = self.aggregate_batches.pop(0) if self.aggregate_batches else []
            cursor = {"id": self._cursor_id(), "ns": namespace, "nextBatch": batch}
            return {"ok": 1, "cursor": cursor}
        namespace = f"{doc.get('$db')}.{doc[name]}"
        if name == "aggregate":
            batch = self.aggregate_batches.pop(0) if self.aggregate_batches else []
            cursor = {"id": self._cursor_id(), "ns": namespace, "firstBatch": batch}
            return {"ok": 1, "cursor": cursor}
        if name == "find":
            batch = self.find_batches.pop(0) if self.find_batches else []
            return {"ok": 1, "cursor": {"id": 0, "ns": namespace, "firstBatch": batch}}
        if name == "update":
            count = len(doc["updates"])
            upserted = [{"index": i, "_id": i} for i in range(count)]
            return {"ok": 1, "n": count, "nModified": 0, "upserted": upserted}
        if name == "delete":
            return {"ok": 1, "n": self.deleted}
        if name == "findAndModify":
            before = self.found_and_modified.pop(0) if self.found_and_modified else None
            found = {"n": 1, "updatedExisting": before is not None}
            return {"ok": 1, "value": before, "lastErrorObject": found}
        if name == "listIndexes":
            return {"ok": 1, "cursor": {"id": 0, "ns": namespace, "firstBatch": self.indexes}}
        return {"ok": 1}


def stop_promptly(server: MockupDB) -> None:
    """``server.stop()`` without its wait of up to a second: mockupdb's accept loop polls its
    listening socket once a second, and ``stop`` joins it. Marked as stopping and woken by one
    connection, the loop ends at once; the suite starts dozens of these servers."""
    server._stopped = True
    with contextlib.suppress(OSError):
        socket.create_connection(server.address, timeout=1).close()
    server._accept_thread.join(5)  # gone before stop() lists the threads to join
    server.stop()


def start_wire_server() -> Iterator[WireServer]:
    server = MockupDB(
        auto_ismaster={
            "maxWireVersion": 21,
            "minWireVersion": 0,
            "setName": "rs",
            "isWritablePrimary": True,
            "ismaster": True,
            "secondary": False,
            "logicalSessionTimeoutMinutes": 30,
        },
        request_timeout=60,
    )
    server.run()
    # the primary must list itself, as the address clients know it by
    server.autoresponds(
        "ismaster",
        maxWireVersion=21,
        minWireVersion=0,
        setName="rs",
        hosts=[server.address_string],
        ismaster=True,
        isWritablePrimary=True,
        secondary=False,
        logicalSessionTimeoutMinutes=30,
    )
    wire = WireServer(server)
    server.autoresponds(wire.handle)
    try:
        yield wire
    finally:
        stop_promptly(server)
