"""``serve``: the store service for remote proxies, with its options."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from ._base import EXIT_USAGE, CommandError, cli


def _rate_limit(text: str | None) -> tuple[int, float] | None:
    if text is None:
        return None
    requests, _, seconds = text.partition("/")
    try:
        return int(requests), float(seconds or "1")
    except ValueError:
        raise CommandError(
            f"--rate-limit must be REQUESTS/SECONDS, such as 100/60, not {text!r}", EXIT_USAGE
        ) from None


def _has_password(uri: str) -> bool:
    try:
        return bool(urlsplit(uri).password)
    except ValueError:  # not a URI at all: the store says so when it opens it
        return False


def _served_uri(ctx: click.Context, uri: str | None, embedded: bool) -> str:
    """The URI to serve: serve's --uri, else the main --uri (each may come from
    $AGENT_DATASTORE_URI); the embedded store only when --embedded asks for it."""
    source = ctx
    if not uri:
        uri = ctx.ensure_object(dict).get("uri")
        source = ctx.parent or ctx
    if embedded:
        if uri:
            raise CommandError(
                "--embedded serves a new in-memory store: give no --uri and unset "
                "AGENT_DATASTORE_URI",
                EXIT_USAGE,
            )
        return "mongomock://"
    if not uri:
        raise CommandError(
            "serve needs a database: set AGENT_DATASTORE_URI (or pass --uri); --embedded "
            "serves a new in-memory store instead, for tests and demos",
            EXIT_USAGE,
        )
    from_command_line = source.get_parameter_source("uri") == ParameterSource.COMMANDLINE
    if from_command_line and _has_password(uri):
        # never the URI itself: the warning may end up in logs that more people read
        click.echo(
            "agent-datastore: warning: the --uri on the command line holds a password, which "
            "every local user can read in the process list; export AGENT_DATASTORE_URI instead",
            err=True,
        )
    return uri


@cli.command()
@click.option(
    "--uri",
    envvar="AGENT_DATASTORE_URI",
    metavar="URI",
    help="The database to serve (default: the main --uri, else $AGENT_DATASTORE_URI, the "
    "way to pass a password).",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Serve a new in-memory store instead of a database: nothing persists (tests, demos).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=32 * 1024 * 1024,
    show_default=True,
    help="Larger request bodies are answered 413.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Larger get_many, set_many and delete_many batches are answered 413.",
)
@click.option(
    "--max-answer-bytes",
    type=click.IntRange(min=1),
    default=32 * 1024 * 1024,
    show_default=True,
    help="Bytes of JSON in one answer at most (a single larger value is still answered "
    "alone); remote proxies fetch the rest of a get_many or list_items in more requests.",
)
@click.option(
    "--max-inflight-bytes",
    type=click.IntRange(min=1),
    default=256 * 1024 * 1024,
    show_default=True,
    help="Bytes that requests in flight may hold at once (bodies, their parsing, answers); "
    "beyond it a request waits briefly, then is answered 503 with Retry-After.",
)
@click.option(
    "--rate-limit",
    metavar="REQUESTS/SECONDS",
    help="Per token, e.g. 100/60; beyond it requests are answered 429. Default: none.",
)
@click.option(
    "--audience",
    envvar="AGENT_DATASTORE_AUDIENCE",
    metavar="NAME",
    help="Accept only tokens issued for this audience (issue_token(..., audience=NAME)); "
    "without it, only tokens that name no audience. Default: $AGENT_DATASTORE_AUDIENCE.",
)
@click.option(
    "--request-timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="A connection whose request has not arrived whole (headers and body) this long after "
    "it was accepted, or after the request began, is closed.",
)
@click.option(
    "--max-connections",
    metavar="N",
    type=click.IntRange(min=1),
    help="Open connections at most; new ones beyond it are closed at once. Default: what the "
    "open-file limit allows after the database's pool, at most 10000.",
)
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), help="For HTTPS.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="For HTTPS.")
@click.option(
    "--metrics-token",
    envvar="AGENT_DATASTORE_METRICS_TOKEN",
    metavar="TOKEN",
    help="Answer GET /metrics only to requests bearing this token (at least 16 characters); "
    "without it, /metrics is open. Default: $AGENT_DATASTORE_METRICS_TOKEN.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    uri: str | None,
    embedded: bool,
    host: str,
    port: int,
    max_body_bytes: int,
    max_batch: int,
    max_answer_bytes: int,
    max_inflight_bytes: int,
    rate_limit: str | None,
    audience: str | None,
    request_timeout: float,
    max_connections: int | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    metrics_token: str | None,
) -> None:
    """Serve the store over HTTP to remote proxies (the server extra).

    Each request must carry a token from agent_datastore.issue_token, signed with the secret
    in $AGENT_DATASTORE_SECRET (at least 32 bytes). The database comes from
    $AGENT_DATASTORE_URI (or --uri, which other local users can read); --embedded serves a
    new in-memory store instead. See docs/remote.md.
    """
    secret = os.environ.get("AGENT_DATASTORE_SECRET")
    if not secret:
        raise CommandError(
            "set AGENT_DATASTORE_SECRET to the secret the runtime signs tokens with", EXIT_USAGE
        )
    uri = _served_uri(ctx, uri, embedded)
    if uri.startswith("mongomock://"):
        click.echo(
            "agent-datastore: serving a new in-memory store: nothing persists; for tests and "
            "demos only",
            err=True,
        )
    try:
        from ..server import serve as run_service
    except ImportError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    run_service(
        uri,
        secret,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        request_timeout=request_timeout,
        max_connections=max_connections,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_answer_bytes=max_answer_bytes,
        max_inflight_bytes=max_inflight_bytes,
        rate_limit=_rate_limit(rate_limit),
        audience=audience,
        metrics_token=metrics_token,
    )
