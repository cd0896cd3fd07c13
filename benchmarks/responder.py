"""A MongoDB wire-protocol responder that answers at once, for the benchmarks.

It speaks just enough of the protocol for pymongo's ``MongoClient`` and ``AsyncMongoClient``:
the handshake (``OP_QUERY`` or ``OP_MSG``), and ``OP_MSG`` commands, each answered with a
canned reply, so that a benchmark measures the client path (driver plus this package) and not
a database. It runs in a process of its own, so that it does not share the client's
interpreter lock. What ``find``, ``findAndModify`` and ``distinct`` return is set by a
``benchConfig`` command; one with a ``namespace`` sets what finds in that namespace return.
``benchLast`` answers the last ``find`` and ``update`` commands received.
"""

from __future__ import annotations

import bisect
import socket
import socketserver
import struct
import subprocess
import sys
import threading
from datetime import datetime, timezone
from typing import Any

import bson

_HEADER = struct.Struct("<iiii")
_OP_REPLY, _OP_QUERY, _OP_MSG = 1, 2004, 2013

_HELLO = {
    "ismaster": True,
    "isWritablePrimary": True,
    "helloOk": True,
    "maxBsonObjectSize": 16 * 1024 * 1024,
    "maxMessageSizeBytes": 48_000_000,
    "maxWriteBatchSize": 100_000,
    "logicalSessionTimeoutMinutes": 30,
    "minWireVersion": 0,
    "maxWireVersion": 21,
    "readOnly": False,
    "ok": 1.0,
}


# The store's two indexes, as listIndexes describes them on a server where they were built.
_INDEXES = [
    {"v": 2, "key": {"_id": 1}, "name": "_id_"},
    {
        "v": 2,
        "key": {"userId": 1, "agentName": 1, "namespace": 1, "key": 1},
        "name": "userId_1_agentName_1_namespace_1_key_1",
        "unique": True,
    },
    {
        "v": 2,
        "key": {"expiresAt": 1},
        "name": "expiresAt_1",
        "expireAfterSeconds": 0,
        "sparse": True,
    },
]


class _State:
    def __init__(self) -> None:
        self.find: list[dict[str, Any]] = []
        self.find_keys: list[str] = []
        self.find_and_modify: dict[str, Any] | None = None
        self.distinct: list[Any] = []
        # documents (and their keys) that finds in one namespace get instead of ``find``
        self.datasets: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
        # the last find and update received, which ``benchLast`` answers: how a benchmark
        # checks that two clients send the same command
        self.last: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()


def _answer(state: _State, command: dict[str, Any], documents: list[dict[str, Any]]) -> Any:
    name = next(iter(command))
    namespace = f"{command.get('$db')}.{command[name]}"
    if name in ("hello", "isMaster", "ismaster"):
        return {**_HELLO, "localTime": datetime.now(timezone.utc)}
    if name == "benchConfig" and "namespace" in command:
        documents = sorted(command.get("find", []), key=lambda d: d.get("key", ""))
        with state.lock:
            keys = [document.get("key", "") for document in documents]
            state.datasets[command["namespace"]] = (documents, keys)
        return {"ok": 1.0}
    if name == "benchConfig":
        with state.lock:
            state.find = sorted(command.get("find", state.find), key=lambda d: d.get("key", ""))
            state.find_keys = [document.get("key", "") for document in state.find]
            state.find_and_modify = command.get("findAndModify", state.find_and_modify)
            state.distinct = command.get("distinct", state.distinct)
        return {"ok": 1.0}
    if name == "benchLast":
        return {"last": dict(state.last), "ok": 1.0}
    if name in ("find", "update"):
        state.last[name] = {**command, "updates": documents} if documents else command
    if name == "find":
        # the configured documents, sorted by key, from after a $gt bound, up to the limit:
        # enough for list_keys pages and iter_keys to walk them as on a server
        start = 0
        query = command.get("filter") or {}
        documents, keys = state.datasets.get(query.get("namespace"), (state.find, state.find_keys))
        key_condition = query.get("key")
        if isinstance(key_condition, dict) and "$gt" in key_condition:
            start = bisect.bisect_right(keys, key_condition["$gt"])
        limit = abs(int(command.get("limit", 0) or 0))
        batch = documents[start : start + limit] if limit else documents[start:]
        return {"cursor": {"firstBatch": batch, "id": 0, "ns": namespace}, "ok": 1.0}
    if name == "getMore":
        return {"cursor": {"nextBatch": [], "id": 0, "ns": namespace}, "ok": 1.0}
    if name == "update":
        count = len(command.get("updates", documents))
        return {"n": count, "nModified": count, "ok": 1.0}
    if name == "delete":
        return {"n": 1, "ok": 1.0}
    if name == "findAndModify":
        found = {"n": 1, "updatedExisting": state.find_and_modify is not None}
        return {"value": state.find_and_modify, "lastErrorObject": found, "ok": 1.0}
    if name == "distinct":
        return {"values": state.distinct, "ok": 1.0}
    if name == "listIndexes":  # a store's first use finds its indexes in place
        return {"cursor": {"firstBatch": _INDEXES, "id": 0, "ns": namespace}, "ok": 1.0}
    if name == "aggregate":
        return {"cursor": {"firstBatch": [], "id": 0, "ns": namespace}, "ok": 1.0}
    return {"ok": 1.0}  # ping, endSessions, createIndexes, killCursors, ...


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = connection.recv(remaining)
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _parse_msg(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    position, command, documents = 4, {}, []  # after flagBits
    while position < len(body):
        kind = body[position]
        position += 1
        if kind == 0:
            size = int.from_bytes(body[position : position + 4], "little")
            command = bson.decode(body[position : position + size])
            position += size
        else:
            size = int.from_bytes(body[position : position + 4], "little")
            section = body[position + 4 : position + size]
            identifier_end = section.index(b"\x00")
            documents.extend(bson.decode_all(section[identifier_end + 1 :]))
            position += size
    return command, documents


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        connection: socket.socket = self.request
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                length, request_id, _, opcode = _HEADER.unpack(_read_exactly(connection, 16))
                body = _read_exactly(connection, length - 16)
                if opcode == _OP_QUERY:
                    collection_end = body.index(b"\x00", 4)
                    query = bson.decode_all(body[collection_end + 9 :])[0]
                    reply = bson.encode(_answer(state, query, []))
                    payload = struct.pack("<iqii", 0, 0, 0, 1) + reply
                    header = _HEADER.pack(16 + len(payload), 0, request_id, _OP_REPLY)
                else:
                    command, documents = _parse_msg(body)
                    payload = b"\x00\x00\x00\x00\x00" + bson.encode(
                        _answer(state, command, documents)
                    )
                    header = _HEADER.pack(16 + len(payload), 0, request_id, _OP_MSG)
                connection.sendall(header + payload)
        except (ConnectionError, OSError):
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve() -> None:
    """Serve on a free port of 127.0.0.1, printing the port first, until killed."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = _State()  # type: ignore[attr-defined]
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Responder:
    """The responder in a child process; ``uri`` reaches it, ``stop()`` ends it."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__], stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.port = int(self._process.stdout.readline())

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/bench"

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> Responder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    serve()
