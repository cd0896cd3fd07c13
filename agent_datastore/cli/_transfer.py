"""``export`` and ``import``: moving items to and from JSON Lines files, plain or gzip."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import secrets
import shlex
import signal
import stat
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import click

from .. import admin
from .._exceptions import DataStoreError, DataStoreUnavailable
from ._base import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CommandError,
    _counted,
    _items,
    _json_flag,
    _opens_new_embedded_store,
    _print_json,
    _progress,
    _store,
    cli,
)

GZIP_MAGIC = b"\x1f\x8b"
# Other compressions a backup may have been put through: named, rather than read as lines of
# garbage. Import reads plain and gzip files only.
_OTHER_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_MAGIC_BYTES = 6  # enough of the input's start to tell all of them apart
# How much of a line too long to import is read at a time while it is skipped.
_SKIP_CHUNK = 1 << 20
# gzip(1)'s own default: level 9 is several times slower for a few percent less.
_GZIP_LEVEL = 6


def _naming(exc: OSError, path: str) -> OSError:
    """The same error, about the path the user gave (not a temporary or resolved one)."""
    return OSError(exc.errno, exc.strerror or str(exc), path)


def _is_standard_input(path: str) -> bool:
    """Whether ``path`` is standard input under any name (``-``, ``/dev/stdin``, the very file
    or pipe that is redirected to it)."""
    if path == "-":
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdin.fileno()))
    except (OSError, ValueError, AttributeError):  # no standard input to compare with
        return False


def _same_file(path: str, other: str) -> bool:
    if _is_standard_input(other):
        return _is_standard_input(path)
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return False


class _Terminated(BaseException):
    """SIGTERM or SIGHUP (cron's timeout, a closed terminal) during an export or an import:
    raised where the command is, so that it cleans up as for Ctrl-C."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.exit_code = 128 + signal_number


@contextlib.contextmanager
def _terminations_raise() -> Iterator[None]:
    names = ("SIGTERM", "SIGHUP")
    signals = [getattr(signal, name) for name in names if hasattr(signal, name)]

    def raise_terminated(signal_number: int, _frame: object) -> None:
        raise _Terminated(signal_number)

    try:
        previous = {number: signal.signal(number, raise_terminated) for number in signals}
    except ValueError:  # not the main thread: signals stay as they were
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _ExportTarget:
    """Where an export goes. A file is written under a temporary name beside it, flushed to
    disk, and only then renamed over it (``os.replace`` is atomic), keeping the permission
    bits of the file it replaces (a backup may be private); a new file gets the umask's.
    Standard output (``-``) and what is not a regular file (``/dev/null``, a pipe) are written
    directly."""

    def __init__(self, output: str) -> None:
        self.temporary: str | None = None
        self.replaces_file = False
        self._owned = output != "-"
        if output == "-":
            self.file: IO[bytes] = sys.stdout.buffer
            return
        # through a symbolic link, the file it points to is replaced and the link kept
        self.path = os.path.realpath(output)
        try:
            mode: int | None = os.stat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            self.file = open(self.path, "wb")  # noqa: SIM115  # closed by commit or discard
            return
        directory, name = os.path.split(self.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        while True:
            temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.partial")
            try:
                # 0o666 less the umask, as open() gives any new file
                descriptor = os.open(temporary, flags, 0o666)
                break
            except FileExistsError:
                continue
        self.temporary = temporary
        try:
            self.file = os.fdopen(descriptor, "wb")
            if mode is not None:
                os.chmod(temporary, stat.S_IMODE(mode))
                self.replaces_file = True
        except BaseException:
            self.discard()
            raise

    def replaces_data(self) -> bool:
        """Whether the export would replace a file that holds anything: any byte, unless it is
        a gzip stream of nothing (an earlier empty export with --gzip)."""
        if not self.replaces_file:
            return False
        with open(self.path, "rb") as existing:
            start = existing.read(len(GZIP_MAGIC))
            if start != GZIP_MAGIC:
                return start != b""
            existing.seek(0)
            try:
                with gzip.GzipFile(fileobj=existing, mode="rb") as unpacked:
                    return unpacked.read(1) != b""
            except (OSError, EOFError, zlib.error):
                return True  # damaged, but whatever it holds is not ours to throw away

    def commit(self) -> None:
        self.file.flush()
        if self.temporary is None:
            if self._owned:
                self.file.close()
            return
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary, self.path)
        self.temporary = None
        # the rename itself must reach the disk, or a crash could bring the old file back
        with contextlib.suppress(OSError, AttributeError):
            directory = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def discard(self) -> None:
        if self._owned:
            with contextlib.suppress(OSError):
                self.file.close()
        if self.temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.temporary)
            self.temporary = None


class _Gate:
    """Passes writes on to ``file`` until shut, then drops them. The gzip writer writes its
    trailer whenever it is closed, even when it is only collected after a failure, and a
    failed export must not end in one: on standard output, a cut-off archive must not look
    complete."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.shut = False

    def write(self, data: bytes) -> int:
        return len(data) if self.shut else self._file.write(data)

    def flush(self) -> None:
        if not self.shut:
            self._file.flush()


@cli.command(name="export")
@click.argument("user", required=False)
@click.argument("agent", required=False)
@click.argument("namespace", required=False)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="The JSON Lines file to write, or - for standard output.",
)
@click.option("--gzip", "compress", is_flag=True, help="Compress the output with gzip.")
@click.option(
    "--force", is_flag=True, help="Replace a non-empty file even with an export of no items."
)
@_json_flag
@click.pass_context
def export_(
    ctx: click.Context,
    user: str | None,
    agent: str | None,
    namespace: str | None,
    output: str,
    compress: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Write items as JSON Lines (all, or one scope's).

    FILE is replaced only once the export is complete (it is written beside FILE, then
    renamed over it), and keeps its permissions. An export of no items is "not found": it
    leaves a non-empty FILE as it was and exits 1, unless --force. Without --uri or
    AGENT_DATASTORE_URI there is nothing to export (the store would be a new, empty one in
    memory): exit 2.
    """
    if _opens_new_embedded_store(ctx):
        raise CommandError(
            "nothing to export: without --uri or AGENT_DATASTORE_URI the store would be a "
            "new, empty one in memory; name the store to export with --uri URI or "
            "AGENT_DATASTORE_URI=URI",
            EXIT_USAGE,
        )
    if output != "-" and output.endswith(("/", os.sep)):
        raise CommandError(f"{output} names a directory: give the file to write", EXIT_USAGE)
    store = _store(ctx)
    total = admin.count_items(store, user, agent, namespace)
    written, skipped = 0, 0
    try:
        target = _ExportTarget(output)
    except OSError as exc:
        raise _naming(exc, output) from exc
    gate = _Gate(target.file)
    out: IO[bytes] | gzip.GzipFile = target.file
    terminations = contextlib.ExitStack()
    try:
        terminations.enter_context(_terminations_raise())
        if compress:
            # no name or time in the header: the same items give the same bytes
            out = gzip.GzipFile(
                filename="", fileobj=gate, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0
            )
        with _progress(total, "export") as bar:
            for line, problem in admin.export_lines(store, user, agent, namespace):
                if line is None:
                    click.echo(f"agent-datastore: skipped {problem}", err=True)
                    skipped += 1
                else:
                    out.write(line.encode("utf-8") + b"\n")
                    written += 1
                bar.update(1)
        if compress:
            out.close()  # writes the gzip trailer; the file stays open
        if written == 0 and not force and target.replaces_data():
            raise CommandError(
                f"the export holds no items: {output} was left as it was "
                "(--force replaces it with an empty export)",
                EXIT_NOT_FOUND,
            )
        target.commit()
    except BaseException as exc:
        gate.shut = True
        if out is not target.file:
            with contextlib.suppress(Exception):
                out.close()  # now, and into the shut gate, rather than whenever it is collected
        target.discard()
        if isinstance(exc, OSError):
            raise _naming(exc, output) from exc
        if isinstance(exc, _Terminated):
            raise CommandError(
                f"terminated by {exc}: {output} was left as it was", exc.exit_code
            ) from None
        raise
    finally:
        terminations.close()
    report = {"exported": written, "skipped": skipped, "file": output}
    if output != "-":
        text = f"exported {_items(written)} to {output}"
        _print_json(report) if as_json else click.echo(
            text + (f", skipped {skipped}" if skipped else "")
        )
    if skipped:
        ctx.exit(EXIT_REFUSED)


class _UnreadableInput(Exception):
    """The input could not be read past a line: a read error, a truncated gzip stream."""

    def __init__(self, after_line: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.after_line = after_line


class _CountedSource(io.RawIOBase):
    """A binary stream's bytes as they are read, each chunk counted into the progress bar:
    for a gzip file, the compressed bytes, which its size measures."""

    def __init__(self, source: IO[bytes], on_read: Callable[[int], object]) -> None:
        # read1 returns what is there: a slow producer on a pipe is read as it writes
        self._read: Callable[[int], bytes] = getattr(source, "read1", source.read)
        self._on_read = on_read
        self._first = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any, /) -> int:
        data = self._read(len(buffer))
        # the first read holds the magic bytes whenever the input is that long, so that one
        # peek tells gzip from text even when a pipe delivers a byte at a time
        while self._first and 0 < len(data) < _MAGIC_BYTES:
            more = self._read(len(buffer) - len(data))
            if not more:
                break
            data += more
        self._first = False
        buffer[: len(data)] = data
        self._on_read(len(data))
        return len(data)


def _numbered_lines(
    stream: io.BufferedIOBase, limit: int
) -> Iterator[tuple[int, bytes | Exception]]:
    """Each line with its number; a line over ``limit`` bytes is given as the error saying
    so, and is skipped in chunks without ever being held whole."""
    number = 0
    while True:
        try:
            line = stream.readline(limit + 1)
            if not line:
                return
            number += 1
            entry: bytes | Exception = line
            if len(line) > limit and not line.endswith(b"\n"):
                entry = ValueError(
                    f"longer than {limit:,} bytes, more than any export line can be: skipped"
                )
                while line and not line.endswith(b"\n"):
                    line = stream.readline(_SKIP_CHUNK)
        except (OSError, EOFError, zlib.error) as exc:
            raise _UnreadableInput(number, exc) from exc
        yield number, entry


def _open_input(
    path: str, stack: contextlib.ExitStack, on_read: Callable[[int], object]
) -> io.BufferedIOBase:
    """The input as bytes, decompressed if it is gzip; other compressions are refused."""
    if path == "-":
        source: IO[bytes] = sys.stdin.buffer
    else:
        source = stack.enter_context(open(path, "rb"))  # noqa: SIM115  # the stack closes it
    buffered = stack.enter_context(io.BufferedReader(_CountedSource(source, on_read), 1 << 16))
    start = buffered.peek(_MAGIC_BYTES)[:_MAGIC_BYTES]  # looked at, not consumed
    if start.startswith(GZIP_MAGIC):
        return stack.enter_context(gzip.GzipFile(fileobj=buffered, mode="rb"))
    for magic, name in _OTHER_MAGIC.items():
        if start.startswith(magic):
            if path == "-":
                fix = f"put {name} -dc before it in the pipe"
            else:
                fix = f"{name} -dc {shlex.quote(path)} | agent-datastore import -"
            raise CommandError(
                f"{'standard input' if path == '-' else path} is compressed with {name}, "
                f"and import reads plain or gzip files: {fix}",
                EXIT_USAGE,
            )
    return buffered


@cli.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Items per bulk write.",
)
@click.option(
    "--skip",
    default=0,
    type=click.IntRange(min=0),
    metavar="N",
    help="Skip the first N lines (to resume an import that stopped).",
)
@click.option("--user", "user_id", metavar="USER", help="Reject the lines of any other user.")
@click.option(
    "--agent", "agent_name", metavar="AGENT", help="With --user: reject any other agent's lines."
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False),
    help="Write rejected lines as JSON Lines to this file instead of stderr.",
)
@_json_flag
@click.pass_context
def import_(
    ctx: click.Context,
    file: str,
    batch_size: int,
    skip: int,
    user_id: str | None,
    agent_name: str | None,
    rejects: str | None,
    as_json: bool,
) -> None:
    """Read items from a JSON Lines export (idempotent).

    FILE is a file written by export, or - for standard input, plain or gzip (recognized by
    its first bytes). A line that cannot be imported is rejected, reported by its number as it is
    met, and the import goes on (exit 4). Only a database failure stops it, saying how many
    items were written and the --skip that resumes it. Without --uri or AGENT_DATASTORE_URI
    there is nowhere to import (a new store in memory would vanish with the command): exit 2.
    """
    if agent_name is not None and user_id is None:
        raise click.UsageError("--agent needs --user", ctx)
    if _opens_new_embedded_store(ctx):
        raise CommandError(
            "nowhere to import: without --uri or AGENT_DATASTORE_URI the store would be a new "
            "one in memory, gone when the command ends; name the store with --uri URI or "
            "AGENT_DATASTORE_URI=URI (--uri mongomock:// to check that a file reads back)",
            EXIT_USAGE,
        )
    if _is_standard_input(file) and ctx.ensure_object(dict).get("script_on_stdin"):
        raise click.UsageError(
            "standard input holds the shell's script, not items: import a FILE instead", ctx
        )
    # opening the input itself for the rejects would empty it
    if rejects is not None and _same_file(rejects, file):
        raise click.UsageError("--rejects names the file being imported", ctx)
    with contextlib.ExitStack() as stack:
        sink: IO[str] | None = None

        def on_reject(number: int, reason: str) -> None:
            if sink is None and not as_json:
                click.echo(f"agent-datastore: {file}:{number}: {reason}", err=True)
                return
            entry = json.dumps({"line": number, "reason": reason}, ensure_ascii=False)
            if sink is not None:
                sink.write(entry + "\n")
            else:
                click.echo(entry, err=True)

        store = _store(ctx)
        size = Path(file).stat().st_size if file != "-" else 0
        bar = stack.enter_context(_progress(size, "import"))
        stream = _open_input(file, stack, bar.update)
        if rejects is not None:  # only now: a refused input leaves an old rejects file alone
            try:
                sink = stack.enter_context(
                    open(rejects, "w", encoding="utf-8", errors="backslashreplace", buffering=1)
                )
            except OSError as exc:
                raise _naming(exc, rejects) from exc
        stack.enter_context(_terminations_raise())
        imports = admin.import_items(
            store,
            _numbered_lines(stream, admin.MAX_LINE_BYTES),
            batch_size,
            on_reject,
            skip=skip,
            user_id=user_id,
            agent_name=agent_name,
        )
        report = admin.ImportReport(lines_done=skip)

        def stop(reason: str, exit_code: int) -> NoReturn:
            written = f"the import stopped after writing {_items(report.imported)}"
            if report.lines_done > 0:
                written += f"; run it again with --skip {report.lines_done} to resume"
            if as_json:
                summary = {"imported": report.imported, "rejected": report.rejected}
                _print_json({**summary, "error": reason, "resume_skip": report.lines_done})
            raise CommandError(f"{reason}; {written}", exit_code)

        try:
            # import_items updates one report in place: after a failure it still tells
            # what was written and where to resume
            for report in imports:  # noqa: B007
                pass
        except DataStoreUnavailable as exc:
            stop(exc.detail, EXIT_UNAVAILABLE)
        except DataStoreError as exc:
            stop(exc.detail, EXIT_REFUSED)
        except KeyboardInterrupt:
            stop("interrupted", EXIT_INTERRUPTED)
        except _Terminated as exc:
            stop(f"terminated by {exc}", exc.exit_code)
        except _UnreadableInput as exc:
            stop(f"{file}: cannot read past line {exc.after_line} ({exc})", EXIT_USAGE)
    if as_json:
        _print_json(
            {"imported": report.imported, "rejected": report.rejected, "skipped": report.skipped}
        )
    else:
        text = f"imported {_items(report.imported)}, rejected {_counted(report.rejected, 'line')}"
        click.echo(text + (f", skipped {_counted(report.skipped, 'line')}" if skip else ""))
    if report.rejected:
        ctx.exit(EXIT_REFUSED)
