"""Failover: a call rides out a replica set's election (members answer, none is primary yet)
and still fails fast when nothing answers. Through pymongo's real clients, against a
wire-protocol test server that answers as a secondary until it is told to become primary."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mockupdb import MockupDB, Request
from pymongo.errors import ServerSelectionTimeoutError

import agent_datastore
from agent_datastore import DataStoreUnavailable, _core
from agent_datastore import _operations as ops

from .helpers import closed_port
from .wire import stop_promptly

# A selection gives up after this long: far shorter than the "elections" below, so that
# every test call needs the store to select again, and long enough for the client's monitor
# to have heard the member's first answer on a loaded machine.
SELECTION_MS = 500


class Member:
    """A one-member replica set whose member is a secondary until ``promote()``."""

    def __init__(self) -> None:
        self.primary = threading.Event()
        self.finds = 0
        self.server = MockupDB(auto_ismaster=False, request_timeout=30)
        self.server.autoresponds(self._answer)
        self.server.run()

    @property
    def uri(self) -> str:
        return f"mongodb://{self.server.address_string}/?replicaSet=rs"

    def promote(self, after: float) -> None:
        timer = threading.Timer(after, self.primary.set)
        timer.daemon = True
        timer.start()

    def _answer(self, request: Request) -> bool:
        name = request.command_name
        if name in ("ismaster", "isMaster", "hello"):
            primary = self.primary.is_set()
            request.ok(
                setName="rs",
                hosts=[self.server.address_string],
                ismaster=primary,
                isWritablePrimary=primary,
                secondary=not primary,
                maxWireVersion=21,
                minWireVersion=0,
                logicalSessionTimeoutMinutes=30,
            )
            return True
        if name == "find":
            self.finds += 1
            namespace = f"{request.doc['$db']}.{request.doc['find']}"
            request.ok(cursor={"id": 0, "ns": namespace, "firstBatch": []})
            return True
        request.ok()  # endSessions and the like
        return True


@pytest.fixture
def member() -> Iterator[Member]:
    member = Member()
    try:
        yield member
    finally:
        member.primary.set()
        stop_promptly(member.server)


def test_a_call_waits_out_an_election(member: Member) -> None:
    with agent_datastore.connect(
        member.uri, serverSelectionTimeoutMS=SELECTION_MS, ensure_indexes=False
    ) as store:
        proxy = store.proxy("user-1", "agent-a")
        member.promote(after=2.0)  # several selections' worth
        assert proxy.get("k", default="absent") == "absent"
        assert member.finds == 1  # sent once, when there was a primary to send it to


def test_an_async_call_waits_out_an_election(member: Member) -> None:
    async def main() -> Any:
        store = agent_datastore.connect_async(
            member.uri, serverSelectionTimeoutMS=SELECTION_MS, ensure_indexes=False
        )
        try:
            member.promote(after=2.0)
            return await store.proxy("user-1", "agent-a").get("k", default="absent")
        finally:
            await store.aclose()

    assert asyncio.run(main()) == "absent"
    assert member.finds == 1


def test_the_wait_for_an_election_is_bounded_by_timeout_ms(member: Member) -> None:
    """The client's timeoutMS replaces the store's window: past it, the call fails with
    the 503 of a database that is away, although a member still answers."""
    with agent_datastore.connect(
        member.uri, serverSelectionTimeoutMS=SELECTION_MS, timeoutMS=1_500, ensure_indexes=False
    ) as store:
        with pytest.raises(DataStoreUnavailable):
            store.proxy("user-1", "agent-a").get("k")
        assert member.finds == 0


def test_nothing_answering_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that is away: every server Unknown, no member answers, so the call fails
    after one selection, however long the window for an election."""
    monkeypatch.setattr(_core, "FAILOVER_WINDOW_MS", 3_600_000)
    answers: list[bool] = []
    members_answer = ops.members_answer

    def spy(target: Any) -> bool:
        answers.append(members_answer(target))
        return answers[-1]

    monkeypatch.setattr(ops, "members_answer", spy)
    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS={SELECTION_MS}"
    with (
        agent_datastore.connect(uri, ensure_indexes=False) as store,
        pytest.raises(DataStoreUnavailable, match="database unavailable"),
    ):
        store.proxy("user-1", "agent-a").get("k")
    assert answers == [False]


def test_members_answer_tells_an_election_from_an_outage(member: Member) -> None:
    with agent_datastore.connect(member.uri, serverSelectionTimeoutMS=SELECTION_MS) as store:
        target = store._target
        with pytest.raises(ServerSelectionTimeoutError):
            target.database.client.admin.command("ping")  # waits for the member's answer
        assert ops.members_answer(target) is True
    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS={SELECTION_MS}"
    with agent_datastore.connect(uri) as store:
        target = store._target
        with pytest.raises(ServerSelectionTimeoutError):
            target.database.client.admin.command("ping")
        assert ops.members_answer(target) is False


@pytest.mark.parametrize(
    ("options", "window"),
    [
        ({}, _core.FAILOVER_WINDOW_MS / 1000),
        ({"timeoutMS": 2_500}, 2.5),
        ({"timeoutMS": 0}, math.inf),
    ],
)
def test_the_failover_window_counts_from_the_first_selection(
    options: dict[str, Any], window: float
) -> None:
    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=1000"
    with agent_datastore.connect(uri, ensure_indexes=False, **options) as store:
        before = time.monotonic()
        deadline = ops.failover_deadline(store._target)
        after = time.monotonic()
    assert deadline is not None
    if math.isinf(window):
        assert deadline == math.inf
    else:
        assert before - 1 + window <= deadline <= after - 1 + window


def test_the_embedded_store_has_no_failover() -> None:
    with agent_datastore.connect("mongomock://") as store:
        assert ops.failover_deadline(store._target) is None
