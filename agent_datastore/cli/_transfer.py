"""``export`` and ``import``: moving items to and from JSON Lines files."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .. import admin
from ._base import EXIT_REFUSED, _items, _json_flag, _print_json, _progress, _store, cli


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
