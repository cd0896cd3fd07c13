"""A MongoDB stand-in that keeps data between processes, for the console script's export and
import tests.

Each ``agent-datastore`` subprocess opens its own client, so an embedded store cannot carry
data from one command to the next. This wire-protocol server (mockupdb underneath) keeps items
in a dict keyed by their unique index, for as long as the test runs, and understands exactly the
commands that ``export`` and ``import`` send: ``listIndexes`` (it holds none, so import's
first use then sends ``createIndexes``), ``createIndexes``, the ``aggregate`` of
``count_documents``, a ``find`` sorted by the index, and batches of upserts. Anything else is
refused, so a change in what those commands send shows up here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mockupdb import MockupDB, Request

from .wire import stop_promptly

_SCOPE = ("userId", "agentName", "namespace", "key")


class StandInServer:
    def __init__(self) -> None:
        self.items: dict[tuple[str, ...], dict[str, Any]] = {}
        self.unexpected: list[str] = []
        self.server = MockupDB(auto_ismaster={"maxWireVersion": 21, "minWireVersion": 0})
        self.server.run()
        self.server.autoresponds(self._handle)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.server.address_string}/standin"

    def stop(self) -> None:
        stop_promptly(self.server)

    def put(self, document: dict[str, Any]) -> None:
        self.items[tuple(document[name] for name in _SCOPE)] = dict(document)

    def _matching(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for scope in sorted(self.items):
            document = self.items[scope]
            if all(document.get(name) == value for name, value in query.items()):
                yield document

    def _handle(self, request: Request) -> bool:
        doc = dict(request.doc)
        name = next(iter(doc))
        if name in ("ismaster", "isMaster", "hello"):
            return False
        if name in ("endSessions", "ping", "createIndexes"):
            request.ok()
        elif name == "listIndexes":
            request.ok(cursor={"id": 0, "ns": "standin.items", "firstBatch": []})
        elif name == "aggregate":  # count_documents: [$match, $group {n: $sum 1}]
            count = sum(1 for _ in self._matching(dict(doc["pipeline"][0]["$match"])))
            batch = [{"_id": 1, "n": count}] if count else []
            request.ok(cursor={"id": 0, "ns": "standin.items", "firstBatch": batch})
        elif name == "find":
            batch = [
                {k: v for k, v in document.items() if k != "_id"}
                for document in self._matching(dict(doc["filter"]))
            ]
            request.ok(cursor={"id": 0, "ns": "standin.items", "firstBatch": batch})
        elif name == "update":
            for statement in doc["updates"]:
                scope = tuple(statement["q"][field] for field in _SCOPE)
                document = self.items.setdefault(scope, dict(zip(_SCOPE, scope, strict=True)))
                document.update(statement["u"]["$set"])
                for name in statement["u"].get("$unset", {}):
                    document.pop(name, None)
            request.ok(n=len(doc["updates"]), nModified=0)
        else:
            self.unexpected.append(name)
            request.command_err(code=59, errmsg=f"the stand-in does not know {name}")
        return True
