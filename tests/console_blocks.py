"""Run the ```console blocks of a Markdown page and compare what they print with what they show.

A console block is a terminal transcript:

- ``$ COMMAND`` runs COMMAND in bash (a line ending in ``\\`` continues on the next); the lines
  that follow, up to the next ``$``, are what it prints, standard output and standard error
  together, in order. Its standard input is empty and not a terminal.
- In what a command prints, a placeholder stands for what changes from run to run:
  ``<time>`` a timestamp such as 2026-11-26T12:51:31.403Z, ``<number>`` a number (digits, with
  a decimal point or thousands separators), and ``…`` any text up to the end of the line or up
  to what follows it on the line. Everything else must match exactly (trailing spaces aside).
- ``$ agent-datastore ... shell`` starts a session: the lines of the transcript that begin
  with the prompt ``agent-datastore> `` are what is typed, and are piped to the session; the
  other lines are what it prints. A later block of the page that begins with the prompt goes
  on with the same session, so a page can interleave a session with prose. The whole session
  runs where it starts, before the page's later ``$`` commands.
- A line ``^C`` means Ctrl-C: once everything shown before it has been printed, the command
  gets SIGINT; the lines after it are what it prints then, until it exits.
- A command that exits with a status other than 0 must be followed, in its block, by
  ``$ echo $?`` showing that status (a session's status is not checked: it is known only when
  the session ends).
- A block is either commands (it starts with ``$``) or the continuation of a session (it
  starts with the prompt), never both; no other fenced block may hold a ``$`` or prompt line,
  so that nothing that looks like a transcript goes unchecked.

The blocks of one page run in order in one temporary directory (the page's working folder
and ``$HOME``), sharing exported variables and ``$?``; no ``AGENT_DATASTORE_*`` variable is set
unless a block sets it.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .helpers import interruptible

PROMPT = "agent-datastore> "
INTERRUPT = "^C"
COMMAND_TIMEOUT = 120.0

PLACEHOLDERS = {
    "<time>": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
    "<number>": r"\d[\d,]*(?:\.\d+)?",
}
_PLACEHOLDER = re.compile("|".join(map(re.escape, [*PLACEHOLDERS, "…"])))


@dataclass
class Command:
    """One ``$`` line of a block, with what it should print."""

    text: str
    line: int  # of the page, for messages
    shown: list[str] = field(default_factory=list)

    @property
    def typed(self) -> list[str]:
        """The lines typed at a session's prompt."""
        return [line.removeprefix(PROMPT) for line in self.shown if line.startswith(PROMPT)]

    @property
    def printed(self) -> list[str]:
        return [line for line in self.shown if not line.startswith(PROMPT)]

    @property
    def starts_session(self) -> bool:
        words = self.text.split()
        return bool(words) and words[0] == "agent-datastore" and "shell" in words


@dataclass
class Block:
    line: int
    commands: list[Command]
    continuation: list[str]  # lines of a block that goes on with the page's session


def console_blocks(page: str) -> list[Block]:
    blocks = []
    for match in re.finditer(r"^```console[^\n]*\n(.*?)^```", page, re.MULTILINE | re.DOTALL):
        first = page.count("\n", 0, match.start()) + 2
        lines = match.group(1).splitlines()
        commands: list[Command] = []
        continuation: list[str] = []
        pending: str | None = None
        for number, line in enumerate(lines, start=first):
            if pending is not None:
                pending += "\n" + line
                if not line.endswith("\\"):
                    commands.append(Command(pending, number))
                    pending = None
            elif line.startswith("$ "):
                if continuation:
                    raise AssertionError(
                        f"line {number}: a block that goes on with a session holds no $ command"
                    )
                if line.endswith("\\"):
                    pending = line[2:]
                else:
                    commands.append(Command(line[2:], number))
            elif commands:
                commands[-1].shown.append(line)
            elif line.startswith(PROMPT) or continuation:
                continuation.append(line)
            else:
                raise AssertionError(f"line {number}: a console block starts with $ or the prompt")
        blocks.append(Block(first, commands, continuation))
    for match in re.finditer(r"^```(?!console)([^\n]*)\n(.*?)^```", page, re.MULTILINE | re.DOTALL):
        for line in match.group(2).splitlines():
            if line.startswith(("$ ", PROMPT)):
                first = page.count("\n", 0, match.start()) + 1
                raise AssertionError(
                    f"the ```{match.group(1)} block at line {first} holds a transcript line, "
                    f"which only a ```console block has checked: {line!r}"
                )
    return blocks


def line_pattern(shown: str) -> re.Pattern[str]:
    parts, position = [], 0
    for match in _PLACEHOLDER.finditer(shown):
        parts.append(re.escape(shown[position : match.start()]))
        parts.append(PLACEHOLDERS.get(match.group(), ".*?"))
        position = match.end()
    parts.append(re.escape(shown[position:]))
    return re.compile("".join(parts))


def mismatch(shown: list[str], printed: list[str]) -> str | None:
    """Why ``printed`` does not match the transcript's lines, or None if it does."""
    shown = [line.rstrip() for line in shown]
    printed = [line.rstrip() for line in printed]
    for index, (expected, actual) in enumerate(zip(shown, printed, strict=False)):
        if not line_pattern(expected).fullmatch(actual):
            return f"line {index + 1} differs:\n  shown:   {expected!r}\n  printed: {actual!r}"
    if len(shown) != len(printed):
        extra = printed[len(shown) :] or shown[len(printed) :]
        which = "printed more" if len(printed) > len(shown) else "printed less"
        return f"{which} than shown: {extra[:5]!r}"
    return None


class Page:
    """The state the blocks of one page share: a folder, the environment and ``$?``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AGENT_DATASTORE_") and name != "MONGODB_URI"
        }
        self.environment.update(
            HOME=str(folder),
            # the agent-datastore of the interpreter that runs the tests
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            PWD=str(folder),
            COLUMNS="80",
            PYTHONIOENCODING="utf-8",
            # as on a terminal, each line leaves at once, so the two streams interleave in order
            PYTHONUNBUFFERED="1",
        )
        self.status = 0
        self._saved = folder / ".console-environment"

    def _script(self, command: str) -> str:
        # sets $? to the last command's status, runs the command, keeps what it exported
        return (
            f"(exit {self.status})\n{command}\n__status=$?\n"
            f"env -0 > {self._saved}\nexit $__status\n"
        )

    def _restore(self) -> None:
        if self._saved.exists():
            entries = self._saved.read_bytes().split(b"\0")
            self.environment = dict(
                entry.decode().split("=", 1) for entry in entries if b"=" in entry
            )
            self._saved.unlink()

    def run(self, command: str, typed: list[str], interrupt_after: list[str] | None) -> list[str]:
        stdin = "".join(line + "\n" for line in typed).encode()
        bash = ["bash", "-c", self._script(command)]
        process = subprocess.Popen(
            # Ctrl-C must reach a command even when the tests run with SIGINT ignored
            bash if interrupt_after is None else interruptible(bash),
            cwd=self.environment.get("PWD", self.folder),  # where a block's cd left it
            env=self.environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to the command's whole process group
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(stdin)
        process.stdin.close()
        output = b""
        deadline = time.monotonic() + COMMAND_TIMEOUT
        interrupted = interrupt_after is None
        with process.stdout, selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                if time.monotonic() > deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    raise AssertionError(f"{command!r} ran longer than {COMMAND_TIMEOUT} s")
                if not selector.select(timeout=0.2):
                    continue
                piece = os.read(process.stdout.fileno(), 65536)
                if not piece:
                    break
                output += piece
                if not interrupted:
                    assert interrupt_after is not None
                    lines = output.decode(errors="replace").splitlines()
                    if len(lines) >= len(interrupt_after) and output.endswith(b"\n"):
                        os.killpg(process.pid, signal.SIGINT)
                        interrupted = True
        self.status = process.wait(timeout=COMMAND_TIMEOUT)
        self._restore()
        return output.decode(errors="replace").splitlines()


def run_page(page_path: Path, folder: Path) -> int:
    """Run every console block of the page; raise AssertionError at the first difference.
    Returns the number of commands run."""
    text = page_path.read_text()
    blocks = console_blocks(text)
    page = Page(folder)
    ran = 0
    session: Command | None = None
    sessions: dict[int, list[Block]] = {}
    # a session takes its typed lines from the blocks that go on with it
    for block in blocks:
        for command in block.commands:
            if command.starts_session:
                session = command
                sessions[id(command)] = []
        if block.continuation and not block.commands:
            assert session is not None, f"line {block.line}: no session to go on with"
            sessions[id(session)].append(block)
    for block in blocks:
        for index, command in enumerate(block.commands):
            shown, typed = command.printed, command.typed
            if command.starts_session:
                for later in sessions[id(command)]:
                    typed += [
                        line.removeprefix(PROMPT)
                        for line in later.continuation
                        if line.startswith(PROMPT)
                    ]
                    shown += [line for line in later.continuation if not line.startswith(PROMPT)]
            interrupt_after = shown[: shown.index(INTERRUPT)] if INTERRUPT in shown else None
            expected = [line for line in shown if line != INTERRUPT]
            printed = page.run(command.text, typed, interrupt_after)
            problem = mismatch(expected, printed)
            if problem:
                raise AssertionError(
                    f"{page_path.name} line {command.line}: $ {command.text}\n{problem}\n"
                    "printed:\n" + "\n".join(printed)
                )
            following = block.commands[index + 1 : index + 2]
            shown_status = bool(following) and following[0].text.strip() == "echo $?"
            if page.status and not command.starts_session and not shown_status:
                raise AssertionError(
                    f"{page_path.name} line {command.line}: $ {command.text}\nexited "
                    f"{page.status}, which the block does not show with $ echo $?"
                )
            ran += 1
    return ran
