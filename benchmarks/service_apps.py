"""The two HTTP servers that ``benchmarks.service`` compares, each run in a process of its own:

    python -m benchmarks.service_apps service|bare --uri URI --port PORT

``service`` is the store service exactly as ``agent-datastore serve`` runs it
(``agent_datastore.server.serve``: ``create_app`` over ``connect_async(URI)``, uvicorn), with
the secret from ``$AGENT_DATASTORE_SECRET``. ``bare`` is what a developer would write without
the package: a Starlette endpoint per operation, under the same uvicorn settings, that reads
the same JSON body, sends the very command the store sends (``benchmarks.run`` holds those
commands to the store's, byte for byte) with pymongo's ``AsyncMongoClient``, and answers the
same bytes. It checks no token and no input: that is the work the comparison is about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import datetime, timezone
from typing import Any

import uvicorn
from pymongo import AsyncMongoClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent_datastore._connections import KEEP_ALIVE_SECONDS
from agent_datastore._store import CLIENT_DEFAULTS, CODEC_OPTIONS, DEFAULT_COLLECTION
from agent_datastore.server import serve as serve_store
from benchmarks.run import SIMPLE, raw_item_filter, raw_live_filter, raw_set_pipeline

# what the service's get asks for: the value, and the size of the item, by which it decides
# whether to encode the answer off its event loop
_SIZED_VALUE = {"value": 1, "_id": 0, "answerSize": {"$bsonSize": "$$ROOT"}}


def _answer(result: Any) -> Response:
    body = json.dumps({"result": result}, ensure_ascii=False, separators=(",", ":"))
    return Response(body.encode("utf-8"), media_type="application/json")


def bare_app(client: AsyncMongoClient[dict[str, Any]]) -> Starlette:
    """``get`` and ``set`` with pymongo alone, at the store service's paths."""
    collection = client.get_default_database("bench")[DEFAULT_COLLECTION].with_options(
        codec_options=CODEC_OPTIONS
    )

    async def get(request: Request) -> Response:
        body = json.loads(await request.body())
        now = datetime.now(timezone.utc)
        found = await collection.find_one(
            raw_live_filter(body["key"], now), _SIZED_VALUE, collation=SIMPLE
        )
        if found is None:
            return _answer({"found": False, "value": None})
        return _answer({"found": True, "value": found["value"]})

    async def put(request: Request) -> Response:
        body = json.loads(await request.body())
        now = datetime.now(timezone.utc)
        await collection.update_one(
            raw_item_filter(body["key"]),
            raw_set_pipeline(body["value"], {}, now),
            upsert=True,
            collation=SIMPLE,
        )
        return _answer(None)

    return Starlette(
        routes=[Route("/v1/get", get, methods=["POST"]), Route("/v1/set", put, methods=["POST"])]
    )


def serve_bare(uri: str, port: int) -> None:
    """``bare_app`` under uvicorn with the settings of ``agent_datastore.server.serve``."""

    async def run() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, **CLIENT_DEFAULTS)
        try:
            config = uvicorn.Config(
                bare_app(client),
                host="127.0.0.1",
                port=port,
                ws="none",
                timeout_keep_alive=KEEP_ALIVE_SECONDS,
                lifespan="off",
                log_level="info",
            )
            await uvicorn.Server(config).serve()
        finally:
            await client.close()

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["service", "bare"])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    if arguments.kind == "service":
        secret = os.environ["AGENT_DATASTORE_SECRET"]
        serve_store(arguments.uri, secret, host="127.0.0.1", port=arguments.port)
    else:
        serve_bare(arguments.uri, arguments.port)


if __name__ == "__main__":
    main()
