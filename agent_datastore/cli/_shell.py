"""``shell``: a session of command lines on one store, typed at a prompt or piped in as a script.

Each line runs one of the group's commands exactly as the command line would (same parsing,
output, errors and exit codes), but on the store the session opened at its start, so that
``set`` then ``get`` works even on the in-memory store.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click

from ._base import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CommandError,
    _on_terminal,
    _store,
    _translated_errors,
    cli,
)

PROMPT = "agent-datastore> "
HISTFILE_VARIABLE = "AGENT_DATASTORE_HISTFILE"
DEFAULT_HISTFILE = "~/.agent_datastore_history"
HISTORY_LENGTH = 1000  # lines kept in the history file

EXIT_WORDS = ("exit", "quit")
HELP_WORD = "help"
BUILTINS = (HELP_WORD, *EXIT_WORDS)
# commands that make no sense on a line: a session inside the session, and a service that
# would hold the prompt until it is stopped
NOT_IN_SHELL = {
    "shell": "this is already a shell session",
    "serve": "run 'agent-datastore serve' on its own",
    "mcp": "run 'agent-datastore mcp' on its own",
}


class _EndSession(Exception):
    """``exit`` or ``quit`` was typed."""


def _line_commands(group: click.Group) -> list[str]:
    return sorted(name for name in group.commands if name not in NOT_IN_SHELL)


def _help_names(group: click.Group) -> list[str]:
    names: list[str] = group.context_settings.get("help_option_names", ["--help"])
    return names


def _completions(line: str, group: click.Group = cli) -> list[str]:
    """The words that can complete the last word of ``line`` (the text before the cursor):
    command names and built-ins for the first word, the command's option names after it."""
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote: still complete what can be
        words = line.split()
    if not line or line[-1].isspace():
        words.append("")
    *before, text = words
    if not before:
        candidates = [*_line_commands(group), *BUILTINS]
    elif before == [HELP_WORD]:
        candidates = _line_commands(group)
    else:
        command = group.commands.get(before[0])
        if command is None or before[0] in NOT_IN_SHELL or not text.startswith("-"):
            return []
        candidates = list(_help_names(group))
        for param in command.params:
            if isinstance(param, click.Option):
                candidates += [*param.opts, *param.secondary_opts]
    return sorted({word for word in candidates if word.startswith(text)})


def _history_path() -> Path | None:
    """Where the history is kept; None when $AGENT_DATASTORE_HISTFILE is set but empty."""
    value = os.environ.get(HISTFILE_VARIABLE)
    if value == "":
        return None
    return Path(value or DEFAULT_HISTFILE).expanduser()


class _Terminal:
    """Line editing, completion and history through the stdlib ``readline``, when it exists
    (it does not on Windows, where the session still works without them)."""

    def __init__(self, group: click.Group) -> None:
        self.readline: ModuleType | None
        try:
            import readline
        except ImportError:
            self.readline = None
            return
        self.readline = readline
        self.history = _history_path()
        self._matches: list[str] = []
        self._group = group
        readline.set_completer(self._complete)
        # options start with "-", which readline would otherwise take for a word boundary
        readline.set_completer_delims(" \t\n")
        if "libedit" in (readline.__doc__ or ""):  # macOS's readline stand-in
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.clear_history()
        readline.set_history_length(HISTORY_LENGTH)
        if self.history is not None:
            try:
                readline.read_history_file(self.history)
            except FileNotFoundError:
                pass
            except OSError as exc:
                click.echo(
                    f"agent-datastore: history not read: {_reason(exc, self.history)}", err=True
                )

    def _complete(self, text: str, state: int) -> str | None:
        assert self.readline is not None
        if state == 0:
            buffer = self.readline.get_line_buffer()[: self.readline.get_endidx()]
            # Python's readline appends nothing to a unique match: the space that ends a
            # word is part of each candidate
            self._matches = [word + " " for word in _completions(buffer, self._group)]
        return self._matches[state] if state < len(self._matches) else None

    def length_before(self, line: str) -> int:
        """The history's length to come back to after running ``line``, which has just been
        read: without it when it starts with a space (as bash's ignorespace: a line the operator
        keeps out of the file), with it otherwise."""
        if self.readline is None:
            return 0
        length: int = self.readline.get_current_history_length()
        if line.startswith(" ") and length and self.readline.get_history_item(length) == line:
            return length - 1
        return length

    def keep_only(self, length: int) -> None:
        """Forgets the lines added after the first ``length``: answers to a confirmation, or a
        line the operator kept out of the history by starting it with a space."""
        if self.readline is None:
            return
        while self.readline.get_current_history_length() > length:
            self.readline.remove_history_item(self.readline.get_current_history_length() - 1)

    def save(self) -> None:
        if self.readline is None or self.history is None:
            return
        try:
            # the lines hold values: readable by the operator alone, from the first byte
            os.close(os.open(self.history, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(self.history, 0o600)
            self.readline.write_history_file(self.history)
        except OSError as exc:
            click.echo(
                f"agent-datastore: history not saved: {_reason(exc, self.history)}", err=True
            )


def _reason(exc: OSError, path: Path) -> str:
    return f"{exc.strerror or exc}: {path}"


class _Session:
    def __init__(self, ctx: click.Context, group: click.Group) -> None:
        # a line's context hangs off the group's, as if the line had been typed after
        # "agent-datastore": usage and help read "agent-datastore set ...", and the state (with
        # the session's open store) is the same object
        self.parent = ctx.parent or ctx
        self.group = group

    def run(self, line: str) -> int | None:
        """Runs one line and returns its exit code; None for a blank line or a comment.
        Raises ``_EndSession`` on ``exit`` or ``quit``."""
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        try:
            words = shlex.split(text)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            message = f"cannot split the line: {str(exc).lower()}"
            return self._failed(CommandError(message, EXIT_USAGE))
        if words in ([word] for word in EXIT_WORDS):
            raise _EndSession
        try:
            with _translated_errors():
                return self._run_words(words)
        except click.ClickException as exc:
            return self._failed(exc)
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.Abort:  # a confirmation answered with Ctrl-C or Ctrl-D
            click.echo("Aborted!", err=True)
            return EXIT_NOT_FOUND

    @staticmethod
    def _failed(exc: click.ClickException) -> int:
        exc.show()
        return exc.exit_code

    def _run_words(self, words: list[str]) -> int:
        name, args = words[0], words[1:]
        if name in EXIT_WORDS:
            raise CommandError(f"{name} takes no arguments", EXIT_USAGE)
        if name == HELP_WORD or name in _help_names(self.group):
            if len(args) > 1:
                raise CommandError("help takes at most one COMMAND", EXIT_USAGE)
            if not args or args[0] in BUILTINS:
                click.echo(self._overview())
                return 0
            name, args = args[0], ["--help"]
        if name.startswith("-"):
            raise CommandError(
                f"{name}: the options of agent-datastore itself (--uri, --version) go before "
                "'shell'; the session's store is fixed",
                EXIT_USAGE,
            )
        if name in NOT_IN_SHELL:
            raise CommandError(
                f"{name} is not available inside the shell: {NOT_IN_SHELL[name]}", EXIT_USAGE
            )
        command = self.group.commands.get(name)
        if command is None:
            raise CommandError(f"no such command {name!r}; 'help' lists them", EXIT_USAGE)
        with command.make_context(name, args, parent=self.parent) as line_ctx:
            command.invoke(line_ctx)
        return 0

    def _overview(self) -> str:
        formatter = click.HelpFormatter()
        names = _line_commands(self.group)
        width = max(len(name) for name in [*names, "help [COMMAND]"])
        limit = formatter.width - 6 - width
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, self.group.commands[name].get_short_help_str(limit)) for name in names]
            )
        with formatter.section("Shell"):
            formatter.write_dl(
                [
                    ("help [COMMAND]", "This list, or COMMAND's help (as COMMAND --help)."),
                    ("exit, quit", "End the session (as does Ctrl-D)."),
                ]
            )
        formatter.write_paragraph()
        formatter.write_text(
            "Each line is a command with the same arguments, options and output as on the "
            "command line, on the store opened at the start of the session."
        )
        return formatter.getvalue().rstrip("\n")


def _piped_lines() -> Iterator[str]:
    while line := sys.stdin.readline():
        yield line


def _prompted_lines(terminal: _Terminal) -> Iterator[tuple[str, int]]:
    """Each line typed at the prompt, with the history's length before any line that runs
    after it; Ctrl-C gives a fresh prompt, Ctrl-D ends the session."""
    while True:
        try:
            line = input(PROMPT)
        except KeyboardInterrupt:
            click.echo()  # the terminal shows ^C: the next prompt starts on its own line
            continue
        except EOFError:
            click.echo()
            return
        yield line, terminal.length_before(line)


@cli.command()
@click.option(
    "--stop-on-error",
    is_flag=True,
    help="End the session at the first line that fails, with that line's exit code.",
)
@click.pass_context
def shell(ctx: click.Context, stop_on_error: bool) -> None:
    """Run command lines on one store for the whole session.

    Each line is a command with the same arguments, options and output as on the command
    line (try "help"), run on the store opened at the start, so the default store in memory
    keeps what a line wrote for the lines after it.

    On a terminal: a prompt, line editing, completion with Tab, and a history kept in
    $AGENT_DATASTORE_HISTFILE (default ~/.agent_datastore_history; empty: none). Otherwise
    the lines are read from standard input, as a script; lines starting with # are comments.

    The exit code is that of the first line that failed, else 0.
    """
    _store(ctx)  # opened now: the notice that nothing persists appears once, first
    group = ctx.parent.command if ctx.parent else cli
    assert isinstance(group, click.Group)
    session = _Session(ctx, group)
    on_terminal = _on_terminal()
    # standard input holds the script: "import -" must not read the lines after it as items
    ctx.ensure_object(dict)["script_on_stdin"] = not on_terminal
    terminal = _Terminal(group) if on_terminal else None
    lines: Iterator[tuple[str, int]] = (
        _prompted_lines(terminal) if terminal else ((line, 0) for line in _piped_lines())
    )
    first_failure = 0
    try:
        for line, history_kept in lines:
            try:
                code = session.run(line)
            except _EndSession:
                break
            except KeyboardInterrupt:  # between the prompt and the command's own guard
                click.echo("agent-datastore: interrupted", err=True)
                code = EXIT_INTERRUPTED
            finally:
                _flush()
                if terminal:
                    terminal.keep_only(history_kept)
            if code:
                first_failure = first_failure or code
                # off a terminal, Ctrl-C stops the script: its later lines may need this one
                if stop_on_error or (code == EXIT_INTERRUPTED and not on_terminal):
                    break
    finally:
        if terminal:
            terminal.save()
    ctx.exit(first_failure)


def _flush() -> None:
    # stdout is block-buffered in a pipe: flushed per line, "shell < script 2>&1" keeps the
    # order in which the lines wrote
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed by the reader
            stream.flush()
