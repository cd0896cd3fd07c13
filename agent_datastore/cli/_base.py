"""What every command shares: the group, its options, the store it opens, errors and exit
codes, and the small formatting helpers."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import click

from .. import __version__
from .._exceptions import DataStoreError, DataStoreUnavailable
from .._store import DataStore, connect

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


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """Turns the store's errors into one line and an exit code, never a traceback: around the
    group's commands, and around each line of a shell session."""
    try:
        yield
    except DataStoreUnavailable as exc:
        raise CommandError(exc.detail, EXIT_UNAVAILABLE) from exc
    except DataStoreError as exc:
        raise CommandError(exc.detail, EXIT_REFUSED) from exc
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc
    except OSError as exc:  # a file that cannot be read or written (or a closed pipe)
        where = f": {exc.filename}" if exc.filename is not None else ""
        raise CommandError(f"{exc.strerror or exc}{where}", EXIT_USAGE) from exc
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise  # click's own ways out, with their exit codes
    except KeyboardInterrupt:
        raise CommandError("interrupted", EXIT_INTERRUPTED) from None
    except Exception as exc:  # a bug or corrupt data: still one line, with its own code
        raise CommandError(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL) from exc


class _Group(click.Group):
    """Runs each command inside ``_translated_errors``."""

    def invoke(self, ctx: click.Context) -> Any:
        with _translated_errors():
            return super().invoke(ctx)


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


def _opens_new_embedded_store(ctx: click.Context) -> bool:
    """Whether the command would run on a new, empty in-memory store of its own: no --uri, no
    $AGENT_DATASTORE_URI, and not inside a shell session (whose store outlives each line)."""
    state: dict[str, Any] = ctx.ensure_object(dict)
    return state.get("store") is None and not state.get("uri")


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


def _counted(count: int, noun: str) -> str:
    """``1 item``, ``2 items``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _items(count: int) -> str:
    return _counted(count, "item")


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


def _progress(length: int, label: str) -> Any:
    return click.progressbar(
        length=length, label=label, file=sys.stderr, hidden=not sys.stderr.isatty()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="agent-datastore")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
