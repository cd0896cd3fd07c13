"""The MCP server over streamable HTTP on 127.0.0.1: every request bears a token, verified as
the store service verifies it, and reaches only that token's user and agent."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx2
import jwt
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

import agent_datastore
from agent_datastore import issue_token
from agent_datastore.mcp import create_http_app
from agent_datastore.server import create_app

from .mcp_helpers import EXACT_VALUE
from .service import SECRET, ServiceThread


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free port of 127.0.0.1 in a thread, with its lifespan;
    the MCP endpoint's URL. Stopped at the end, within seconds."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the MCP server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with serving(create_http_app(SECRET, uri="mongomock://")) as url:
        yield url


async def _call(url: str, token: str, name: str, arguments: dict[str, Any]) -> Any:
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    return result.structured_content


def test_a_token_reaches_only_its_own_users_and_agents_items(mcp_url: str) -> None:
    ada = issue_token(SECRET, "ada", "indexer")
    bob = issue_token(SECRET, "bob", "indexer")
    ada_other_agent = issue_token(SECRET, "ada", "writer")

    async def main() -> None:
        await _call(mcp_url, ada, "set", {"key": "secret", "value": "ada's"})
        assert (await _call(mcp_url, ada, "get", {"key": "secret"}))["value"] == "ada's"
        for other in (bob, ada_other_agent):
            assert (await _call(mcp_url, other, "get", {"key": "secret"}))["found"] is False
            assert (await _call(mcp_url, other, "list_keys", {}))["keys"] == []
            assert (await _call(mcp_url, other, "delete", {"key": "secret"}))["deleted"] is False
        assert (await _call(mcp_url, ada, "list_keys", {}))["keys"] == ["secret"]

    asyncio.run(main())


def test_big_integers_and_dollar_and_dot_keys_round_trip_through_json(mcp_url: str) -> None:
    token = issue_token(SECRET, "exact", "agent")

    async def main() -> None:
        await _call(mcp_url, token, "set", {"key": "$a.b", "value": EXACT_VALUE})
        got = await _call(mcp_url, token, "get", {"key": "$a.b"})
        assert got["value"] == EXACT_VALUE
        counter = await _call(mcp_url, token, "increment", {"key": "n", "amount": 2**63 - 1})
        assert counter["value"] == 2**63 - 1

    asyncio.run(main())


def _expired_token() -> str:
    now = int(time.time())
    claims = {
        "iss": "agent-datastore",
        "sub": "ada",
        "agt": "indexer",
        "iat": now - 700,
        "exp": now - 100,
        "jti": "expired-token",
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _tampered_token() -> str:
    header, _, signature = issue_token(SECRET, "ada", "indexer").split(".")
    bob_payload = issue_token(SECRET, "bob", "indexer").split(".")[1]
    return ".".join([header, bob_payload, signature])


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer not-a-token",
        "Basic " + "YWRhOmluZGV4ZXI=",
        "Bearer " + issue_token("another secret, just as long as the real one", "ada", "x"),
        "Bearer " + issue_token(SECRET, "ada", "indexer", audience="another service"),
        "Bearer " + _expired_token(),
        "Bearer " + _tampered_token(),
    ],
    ids=["missing", "empty", "garbage", "basic", "forged", "audience", "expired", "tampered"],
)
def test_a_missing_expired_or_forged_token_is_refused(
    mcp_url: str, authorization: str | None
) -> None:
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"accept": "application/json, text/event-stream"}
    valid = {**accept, "authorization": "Bearer " + issue_token(SECRET, "ada", "indexer")}
    # the same request with a good token is served, so the refusal is the token's
    assert httpx.post(mcp_url, json=listing, headers=valid, timeout=10).status_code == 200
    headers = dict(accept) if authorization is None else {**accept, "authorization": authorization}
    answer = httpx.post(mcp_url, json=listing, headers=headers, timeout=10)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert "tools" not in answer.text


def test_with_a_store_service_the_callers_token_is_passed_on(service: ServiceThread) -> None:
    backend = agent_datastore.connect("mongomock://")
    service_url = service.mount_app(create_app(backend, SECRET))
    try:
        backend.proxy("bob", "indexer").set("secret", "bob's")
        ada = issue_token(SECRET, "ada", "indexer")
        with serving(create_http_app(SECRET, url=service_url)) as url:

            async def main() -> None:
                await _call(url, ada, "set", {"key": "k", "value": 2**64})
                assert (await _call(url, ada, "get", {"key": "secret"}))["found"] is False

            asyncio.run(main())
        # written through the service, for the token's user and agent only
        assert backend.proxy("ada", "indexer").get("k") == 2**64
        assert backend.proxy("bob", "indexer").list_keys() == ["secret"]
    finally:
        service.unmount(service_url)
        backend.close()


def test_the_client_shared_by_callers_keeps_no_cookie_from_one_for_the_next() -> None:
    import httpx

    from agent_datastore.mcp._http import service_client

    sent: list[str | None] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=ada; Path=/"}, json={})

    async def two_callers() -> None:
        client = service_client(httpx.MockTransport(gateway))
        async with client:
            await client.post("http://service.example/v1/get", headers={"authorization": "a"})
            await client.post("http://service.example/v1/get", headers={"authorization": "b"})
        assert not client.cookies

    asyncio.run(two_callers())
    assert sent == [None, None]
