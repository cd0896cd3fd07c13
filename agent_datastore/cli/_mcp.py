"""``mcp``: the data store as a Model Context Protocol server (the mcp extra), on stdio for a
desktop client that starts it, or on streamable HTTP for remote agents.

This module imports only click: ``agent-datastore mcp --help`` works without the extra, and
the command says which extra it needs when it runs without it."""

from __future__ import annotations

import os
from typing import Any

import click
from click.core import ParameterSource

from ._base import EXIT_USAGE, CommandError, cli
from ._serve import _has_password, _rate_limit


def _store_uri(ctx: click.Context, uri: str | None) -> tuple[str | None, bool]:
    """mcp's --uri, else the main --uri (each may come from $AGENT_DATASTORE_URI), and
    whether it was written on the command line."""
    source = ctx
    if not uri:
        uri = ctx.ensure_object(dict).get("uri")
        source = ctx.parent or ctx
    typed = bool(uri) and source.get_parameter_source("uri") == ParameterSource.COMMANDLINE
    return uri, typed


def _check_scope(
    transport: str, uri: str | None, url: str | None, user: str | None, agent: str | None
) -> None:
    if transport == "http" and (user is not None or agent is not None):
        raise CommandError(
            "over http each caller's token names its user and agent: give no --user or --agent",
            EXIT_USAGE,
        )
    if transport == "stdio" and url is not None and (user is not None or agent is not None):
        raise CommandError(
            "with --url the token names the user and agent: give no --user or --agent",
            EXIT_USAGE,
        )
    if transport == "stdio" and uri is not None and (user is None or agent is None):
        raise CommandError(
            "with --uri, name the agent's scope: --user USER --agent AGENT", EXIT_USAGE
        )


def _sdk() -> Any:
    try:
        from .. import mcp as server
    except ImportError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    return server


async def _run_stdio(server: Any, uri: str | None, url: str | None, user: str, agent: str) -> None:
    if url is not None:
        from .._remote import AsyncRemoteDataStoreProxy

        token = os.environ.get("AGENT_DATASTORE_TOKEN")
        if not token:
            raise CommandError(
                "set AGENT_DATASTORE_TOKEN to the token the runtime issued for this agent",
                EXIT_USAGE,
            )
        async with AsyncRemoteDataStoreProxy(url, token) as remote:
            await server.run_stdio(remote)
        return
    from .._async import connect_async

    store = connect_async(uri)
    try:
        await server.run_stdio(store.proxy(user, agent))
    finally:
        await store.aclose()


@cli.command()
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio for a client that starts the server itself; http (streamable HTTP) for "
    "remote agents, each request bearing a token.",
)
@click.option(
    "--uri",
    envvar="AGENT_DATASTORE_URI",
    metavar="URI",
    help="The database (default: the main --uri, else $AGENT_DATASTORE_URI, the way to pass "
    "a password); mongomock:// is a new in-memory store.",
)
@click.option(
    "--url",
    metavar="URL",
    help="A store service (agent-datastore serve) to reach instead of a database: the server "
    "then holds no database credentials. On stdio its token comes from "
    "$AGENT_DATASTORE_TOKEN; over http each caller's own token is passed on.",
)
@click.option("--user", metavar="USER", help="The user whose agent the tools act for (stdio).")
@click.option("--agent", metavar="AGENT", help="The agent the tools act for (stdio).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (http).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--audience",
    envvar="AGENT_DATASTORE_AUDIENCE",
    metavar="NAME",
    help="Over http, accept only tokens issued for this audience, as serve does. Default: "
    "$AGENT_DATASTORE_AUDIENCE.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=32 * 1024 * 1024,
    show_default=True,
    help="Over http, larger request bodies are answered 413, and run nothing.",
)
@click.option(
    "--max-inflight-bytes",
    type=click.IntRange(min=1),
    default=256 * 1024 * 1024,
    show_default=True,
    help="Over http, bytes that the bodies of requests in flight may hold at once (with their "
    "parsing); beyond it a request waits briefly, then is answered 503 with Retry-After.",
)
@click.option(
    "--rate-limit",
    metavar="REQUESTS/SECONDS",
    help="Over http, per token, e.g. 100/60; beyond it requests are answered 429. Default: none.",
)
@click.option(
    "--request-timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Over http, a connection whose request has not arrived whole (headers and body) this "
    "long after it was accepted, or after the request began, is closed.",
)
@click.option(
    "--max-connections",
    metavar="N",
    type=click.IntRange(min=1),
    help="Over http, open connections at most; new ones beyond it are closed at once. "
    "Default: what the open-file limit allows after the store's pool, at most 10000.",
)
@click.pass_context
def mcp(
    ctx: click.Context,
    transport: str,
    uri: str | None,
    url: str | None,
    user: str | None,
    agent: str | None,
    host: str,
    port: int,
    audience: str | None,
    max_body_bytes: int,
    max_inflight_bytes: int,
    rate_limit: str | None,
    request_timeout: float,
    max_connections: int | None,
) -> None:
    """Serve the store's tools to MCP clients (the mcp extra).

    \b
    On stdio (the default) the tools act for one agent:
      --uri URI --user USER --agent AGENT   a database, for trusted local use
      --url URL                             a store service, with $AGENT_DATASTORE_TOKEN
    Over http (--transport http) every request must bear a token signed with the secret in
    $AGENT_DATASTORE_SECRET, and acts for that token's user and agent only; the store is
    --uri or --url. See docs/mcp.md.
    """
    uri, typed = _store_uri(ctx, uri)
    if url is not None:
        if typed:
            raise CommandError("give --uri or --url, not both", EXIT_USAGE)
        uri = None  # a URI from the environment gives way to an explicit service
    elif not uri:
        raise CommandError(
            "mcp needs a store: --uri (or AGENT_DATASTORE_URI) with --user and --agent, or "
            "--url for a store service; --uri mongomock:// is a new in-memory store",
            EXIT_USAGE,
        )
    _check_scope(transport, uri, url, user, agent)
    server = _sdk()  # before anything is said or opened: without the extra, nothing runs
    if typed and uri is not None and _has_password(uri):
        click.echo(
            "agent-datastore: warning: the --uri on the command line holds a password, which "
            "every local user can read in the process list; export AGENT_DATASTORE_URI instead",
            err=True,
        )
    if uri is not None and uri.startswith("mongomock://"):
        # stderr: on stdio, stdout belongs to the protocol
        click.echo("agent-datastore: a new in-memory store: nothing persists", err=True)
    if transport == "stdio":
        import anyio  # which the extra brings

        anyio.run(_run_stdio, server, uri, url, user or "", agent or "")
        return
    secret = os.environ.get("AGENT_DATASTORE_SECRET")
    if not secret:
        raise CommandError(
            "over http, set AGENT_DATASTORE_SECRET to the secret the runtime signs tokens with",
            EXIT_USAGE,
        )
    server.serve_http(
        secret,
        uri=uri,
        url=url,
        audience=audience,
        host=host,
        port=port,
        request_timeout=request_timeout,
        max_connections=max_connections,
        max_body_bytes=max_body_bytes,
        max_inflight_bytes=max_inflight_bytes,
        rate_limit=_rate_limit(rate_limit),
    )
