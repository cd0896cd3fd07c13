"""What the MCP tests share: a store to run the tools on (the embedded one, and a real server
when MONGODB_URI is set), a client of the SDK connected in memory, and values that must
round-trip exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client

import agent_datastore
from agent_datastore import AsyncDataStore
from agent_datastore.mcp import create_server

from .conftest import real_async_store

# Integers JSON numbers hold but doubles do not (2**53 + 1), and beyond int64, both signs;
# keys with '$' and '.' where MongoDB reads operators and paths.
EXACT_VALUE: dict[str, Any] = {
    "past 2**53": 2**53 + 1,
    "past int64": 2**64 + 1,
    "below int64": -(2**70) - 3,
    "$set": {"a.b": [1, {"$x": None}]},
    "": "empty key",
    "float": 0.1,
    "text": "é\u2028\U0001f600",
}

BACKENDS = ["embedded", "mongodb"]


@asynccontextmanager
async def open_store(backend: str) -> AsyncIterator[AsyncDataStore]:
    """A new, empty async store: the embedded one, or a collection of its own on the server
    at MONGODB_URI (dropped afterwards)."""
    if backend == "embedded":
        async with agent_datastore.connect_async("mongomock://") as store:
            yield store
        return
    async with real_async_store("mcp") as store:
        yield store


def run_with_client(
    backend: str, scenario: Callable[[Client, AsyncDataStore], Awaitable[None]]
) -> None:
    """Run ``scenario`` with an SDK client connected in memory to a server acting for
    user ``user-1``'s agent ``agent-a`` on a new store."""

    async def main() -> None:
        async with open_store(backend) as store:
            server = create_server(store.proxy("user-1", "agent-a"))
            async with Client(server) as client:
                await scenario(client, store)

    asyncio.run(main())
