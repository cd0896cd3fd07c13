"""The ``agent-datastore`` command: parses arguments, calls ``agent_datastore.admin`` or a proxy,
formats the result. It never talks to pymongo itself.

Exit codes: 0 success; 1 not found, a failed check or a declined confirmation; 2 usage error
or invalid input; 3 database unavailable; 4 the database refused the operation, an import
rejected some lines, or an export skipped documents that are not JSON; 5 internal error.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

try:
    import click
    from click.core import ParameterSource
except ImportError as exc:  # pragma: no cover - the cli extra is not installed
    raise SystemExit(
        "agent-datastore: the command needs its extra: pip install 'agent-datastore[cli]'"
    ) from exc

from . import __version__, admin
from ._core import ENSURE_INDEXES_TIMEOUT
from ._exceptions import DataStoreError, DataStoreUnavailable
from ._store import DataStore, connect

__all__ = ["main"]

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REFUSED = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C

_F = TypeVar("_F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """An error the command reports in one line, with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: Any = None) -> None:
        click.echo(f"agent-datastore: {self.format_message()}", err=True)


class _Group(click.Group):
    """Turns the store's errors into one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DataStoreUnavailable as exc:
            raise CommandError(exc.detail, EXIT_UNAVAILABLE) from exc
        except DataStoreError as exc:
            raise CommandError(exc.detail, EXIT_REFUSED) from exc
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc), EXIT_USAGE) from exc
        except OSError as exc:  # a file that cannot be read or written
            raise CommandError(f"{exc.strerror or exc}: {exc.filename}", EXIT_USAGE) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own ways out, with their exit codes
        except KeyboardInterrupt:
            raise CommandError("interrupted", EXIT_INTERRUPTED) from None
        except Exception as exc:  # a bug or corrupt data: still one line, with its own code
            raise CommandError(
                f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL
            ) from exc


def _store(ctx: click.Context) -> DataStore:
    state: dict[str, Any] = ctx.ensure_object(dict)
    if state.get("store") is None:
        uri = state.get("uri")
        if not uri:
            click.echo(
                "agent-datastore: no --uri or AGENT_DATASTORE_URI: using a new in-memory store; "
                "nothing persists",
                err=True,
            )
            uri = "mongomock://"
        state["store"] = ctx.with_resource(connect(uri, ensure_indexes=False))
    store: DataStore = state["store"]
    return store


def _json_flag(command: _F) -> _F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text."
    )(command)


def _namespace_option(command: _F) -> _F:
    return click.option(
        "--namespace", "-n", default="default", show_default=True, help="The namespace."
    )(command)


def _yes_option(command: _F) -> _F:
    return click.option(
        "--yes",
        "-y",
        is_flag=True,
        help="Do not ask for confirmation (required when not on a terminal).",
    )(command)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    numeric = [all(isinstance(row[i], int) for row in rows) and rows for i in range(len(headers))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [
            cell.rjust(width) if numeric[i] else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _print_names(names: list[str], as_json: bool) -> None:
    if as_json:
        _print_json(names)
    else:
        for name in names:
            click.echo(name)


def _on_terminal() -> bool:
    return sys.stdin.isatty()


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not _on_terminal():
        raise CommandError(f"{question} Refusing without --yes when not on a terminal.", EXIT_USAGE)
    if not click.confirm(question, default=False, err=True):
        raise CommandError("nothing was changed", EXIT_NOT_FOUND)


def _json_argument(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}", EXIT_USAGE) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--uri",
    envvar="AGENT_DATASTORE_URI",
    metavar="URI",
    help="mongodb://, mongodb+srv:// or mongomock:// (default: $AGENT_DATASTORE_URI, else a "
    "new in-memory store).",
)
@click.version_option(__version__, prog_name="agent-datastore", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, uri: str | None) -> None:
    """Inspect, repair, export and import an agent data store.

    Every item belongs to a USER, an AGENT and a namespace (default: "default"). Commands
    that remove data ask first on a terminal, and need --yes otherwise.

    \b
    Exit codes:
      0  success
      1  not found, a failed check, or a declined confirmation
      2  usage error or invalid input
      3  database unavailable
      4  refused by the database, or an import or export skipped some input
      5  internal error
    130  interrupted (Ctrl-C)
    """
    ctx.ensure_object(dict).setdefault("uri", uri)


@cli.command()
@_json_flag
def demo(as_json: bool) -> None:
    """Run the reference's complete example in memory."""
    from .demo import run_demo

    if as_json:
        _print_json(run_demo(echo=lambda _line: None))
    else:
        run_demo()


@cli.command()
@_json_flag
@click.pass_context
def users(ctx: click.Context, as_json: bool) -> None:
    """List the users that hold data."""
    _print_names(admin.users(_store(ctx)), as_json)


@cli.command()
@click.argument("user")
@_json_flag
@click.pass_context
def agents(ctx: click.Context, user: str, as_json: bool) -> None:
    """List the agents of USER that hold data."""
    _print_names(admin.agents(_store(ctx), user), as_json)


@cli.command()
@click.argument("user")
@click.argument("agent")
@_json_flag
@click.pass_context
def namespaces(ctx: click.Context, user: str, agent: str, as_json: bool) -> None:
    """List the namespaces of USER's AGENT that hold data."""
    _print_names(admin.namespaces(_store(ctx), user, agent), as_json)


@cli.command()
@click.argument("user")
@click.argument("agent")
@_namespace_option
@click.option(
    "--prefix", "-p", help="Only keys that start with this text (literal, case-sensitive)."
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many keys.")
@_json_flag
@click.pass_context
def keys(
    ctx: click.Context,
    user: str,
    agent: str,
    namespace: str,
    prefix: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List the keys of a namespace, sorted."""
    _print_names(admin.keys(_store(ctx), user, agent, namespace, prefix, limit), as_json)


@cli.command()
@click.argument("user")
@click.argument("agent")
@click.argument("key")
@_namespace_option
@_json_flag
@click.pass_context
def get(ctx: click.Context, user: str, agent: str, key: str, namespace: str, as_json: bool) -> None:
    """Show an item with its metadata, dates and size."""
    found = admin.item(_store(ctx), user, agent, key, namespace)
    if found is None:
        raise CommandError(f"no key {key!r} in {user}/{agent}/{namespace}", EXIT_NOT_FOUND)
    if as_json:
        _print_json(found)
        return
    for name in ("userId", "agentName", "namespace", "key", "createdAt", "updatedAt", "version"):
        click.echo(f"{name + ':':<11} {found[name]}")
    expired = " (expired: no agent sees it; the server deletes it soon)" if found["expired"] else ""
    click.echo(f"{'expiresAt:':<11} {found['expiresAt'] or 'never'}{expired}")
    click.echo(f"{'size:':<11} {found['size']} bytes")
    click.echo(f"{'metadata:':<11} {json.dumps(found['metadata'], ensure_ascii=False)}")
    click.echo("value:")
    click.echo(json.dumps(found["value"], indent=2, ensure_ascii=False))


@cli.command()
@click.option(
    "--top",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many of the largest to show.",
)
@_json_flag
@click.pass_context
def stats(ctx: click.Context, top: int, as_json: bool) -> None:
    """Show counts, sizes and the largest scopes."""
    summary = admin.stats(_store(ctx), top)
    if as_json:
        _print_json(summary)
        return
    click.echo(
        _table(
            ["documents", "users", "agents", "namespaces", "bytes"],
            [[summary[n] for n in ("documents", "users", "agents", "namespaces", "size")]],
        )
    )
    for kind, columns in [
        ("users", ["userId"]),
        ("agents", ["userId", "agentName"]),
        ("namespaces", ["userId", "agentName", "namespace"]),
    ]:
        rows = [
            [g.get(c, "(missing)") for c in columns] + [g["documents"], g["size"]]
            for g in summary[f"largest_{kind}"]
        ]
        click.echo(f"\nlargest {kind}:")
        click.echo(_table([*columns, "documents", "bytes"], rows))


@cli.command(name="set")
@click.argument("user")
@click.argument("agent")
@click.argument("key")
@click.argument("value")
@_namespace_option
@click.option(
    "--metadata", "-m", metavar="JSON", help="A JSON object merged into the item's metadata."
)
@_json_flag
@click.pass_context
def set_(
    ctx: click.Context,
    user: str,
    agent: str,
    key: str,
    value: str,
    namespace: str,
    metadata: str | None,
    as_json: bool,
) -> None:
    """Store VALUE, a JSON text, under KEY."""
    parsed = _json_argument(value, "VALUE")
    meta = _json_argument(metadata, "--metadata") if metadata is not None else None
    _store(ctx).proxy(user, agent, namespace).set(key, parsed, metadata=meta)
    report = {"set": key, "namespace": namespace}
    _print_json(report) if as_json else click.echo(f"set {key!r} in {user}/{agent}/{namespace}")


@cli.command()
@click.argument("user")
@click.argument("agent")
@click.argument("key")
@_namespace_option
@_yes_option
@_json_flag
@click.pass_context
def delete(
    ctx: click.Context, user: str, agent: str, key: str, namespace: str, yes: bool, as_json: bool
) -> None:
    """Delete one item."""
    proxy = _store(ctx).proxy(user, agent, namespace)
    _confirm(f"Delete {key!r} from {user}/{agent}/{namespace}?", yes)
    if not proxy.delete(key):
        raise CommandError(f"no key {key!r} in {user}/{agent}/{namespace}", EXIT_NOT_FOUND)
    _print_json({"deleted": 1}) if as_json else click.echo(f"deleted {_items(1)}: {key!r}")


@cli.command()
@click.argument("user")
@click.argument("agent")
@click.option("--namespace", "-n", required=True, help="The namespace to empty.")
@_yes_option
@_json_flag
@click.pass_context
def clear(
    ctx: click.Context, user: str, agent: str, namespace: str, yes: bool, as_json: bool
) -> None:
    """Delete every item of one namespace."""
    proxy = _store(ctx).proxy(user, agent, namespace)
    _confirm(f"Delete every item of {user}/{agent}/{namespace}?", yes)
    deleted = proxy.clear()
    _print_json({"deleted": deleted}) if as_json else click.echo(
        f"deleted {_items(deleted)} from {user}/{agent}/{namespace}"
    )


@cli.command()
@click.argument("user")
@click.argument("agent", required=False)
@_yes_option
@_json_flag
@click.pass_context
def purge(ctx: click.Context, user: str, agent: str | None, yes: bool, as_json: bool) -> None:
    """Erase all data of USER, or only of USER's AGENT."""
    store = _store(ctx)
    scope = f"user {user!r}" + (f", agent {agent!r}" if agent else "")
    _confirm(f"Erase every item of {scope}, in every namespace?", yes)
    deleted = admin.purge(store, user, agent)
    _print_json({"deleted": deleted}) if as_json else click.echo(
        f"erased {_items(deleted)} of {scope}"
    )


def _progress(length: int, label: str) -> Any:
    return click.progressbar(
        length=length, label=label, file=sys.stderr, hidden=not sys.stderr.isatty()
    )


@cli.command(name="export")
@click.argument("user", required=False)
@click.argument("agent", required=False)
@click.argument("namespace", required=False)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="The JSON Lines file to write, or - for standard output.",
)
@_json_flag
@click.pass_context
def export_(
    ctx: click.Context,
    user: str | None,
    agent: str | None,
    namespace: str | None,
    output: str,
    as_json: bool,
) -> None:
    """Write items as JSON Lines (all, or one scope's)."""
    store = _store(ctx)
    total = admin.count_items(store, user, agent, namespace)
    written, skipped = 0, 0
    # atomic: a failed export never leaves a partial file under the final name
    out_file = click.open_file(output, "w", encoding="utf-8", atomic=output != "-")
    with out_file as out, _progress(total, "export") as bar:
        for line, problem in admin.export_lines(store, user, agent, namespace):
            if line is None:
                click.echo(f"agent-datastore: skipped {problem}", err=True)
                skipped += 1
            else:
                out.write(line + "\n")
                written += 1
            bar.update(1)
    report = {"exported": written, "skipped": skipped, "file": output}
    if output != "-":
        text = f"exported {_items(written)} to {output}"
        _print_json(report) if as_json else click.echo(
            text + (f", skipped {skipped}" if skipped else "")
        )
    if skipped:
        ctx.exit(EXIT_REFUSED)


def _numbered_lines(path: str, bar: Any) -> Iterator[tuple[int, bytes]]:
    # bytes: a line that is not UTF-8 is rejected by its number, not fatal to the import
    with click.open_file(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            bar.update(len(line))
            yield number, line


@cli.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Items per bulk write.",
)
@_json_flag
@click.pass_context
def import_(ctx: click.Context, file: str, batch_size: int, as_json: bool) -> None:
    """Read items from a JSON Lines export (idempotent).

    FILE is a file written by export, or - for standard input. Lines that cannot be imported
    are reported on stderr by number as they are met; the others are imported.
    """
    store = _store(ctx)
    size = Path(file).stat().st_size if file != "-" else 0
    rejected: list[dict[str, Any]] = []

    def on_reject(number: int, reason: str) -> None:
        click.echo(f"agent-datastore: {file}:{number}: {reason}", err=True)
        if as_json:
            rejected.append({"line": number, "reason": reason})

    with _progress(size, "import") as bar:
        lines = _numbered_lines(file, bar)
        # the running reports only drive the progress bar; the last one is the total
        (report,) = deque(admin.import_items(store, lines, batch_size, on_reject), 1)
    if as_json:
        _print_json({"imported": report.imported, "rejected": rejected})
    else:
        click.echo(f"imported {_items(report.imported)}, rejected {report.rejected} lines")
    if report.rejected:
        ctx.exit(EXIT_REFUSED)


@cli.command()
@_json_flag
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the connection, the index and the documents."""
    report = admin.doctor(_store(ctx))
    if as_json:
        _print_json(report)
    else:
        click.echo(f"round trip:        {report['latency_ms']:.1f} ms")
        click.echo(f"server version:    {report['server_version']}")
        missing = "MISSING (run ensure-indexes)"
        click.echo(f"unique index:      {report['unique_index'] or missing}")
        click.echo(f"ttl index:         {report['ttl_index'] or missing}")
        for problem in report["index_problems"]:
            click.echo(f"  {problem}")
        click.echo(f"documents:         {report['documents']} (estimated from metadata)")
        click.echo(f"invalid documents: {report['invalid_documents']}")
        for sample in report["invalid_sample"]:
            click.echo(f"  {json.dumps(sample, ensure_ascii=False)}")
        click.echo("healthy" if report["healthy"] else "NOT healthy")
    if not report["healthy"]:
        ctx.exit(EXIT_NOT_FOUND)


@cli.command(name="ensure-indexes")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=ENSURE_INDEXES_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the index build; the server aborts a build still running then.",
)
@_json_flag
@click.pass_context
def ensure_indexes(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """Create the unique and TTL indexes if they are missing.

    Waits for the build, at most --timeout seconds; the server aborts a build still running
    then."""
    _store(ctx).ensure_indexes(timeout=timeout)
    _print_json({"index": "ok"}) if as_json else click.echo("unique and TTL indexes present")


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
    help="Larger get_many and set_many batches are answered 413.",
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
        from .server import serve as run_service
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="agent-datastore")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
