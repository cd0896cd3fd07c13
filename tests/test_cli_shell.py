"""``agent-datastore shell``: a piped script in-process, the stream order through a real pipe, the
completer as a function, and a few bounded sessions on a pseudo-terminal (prompt, Ctrl-C,
history)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from agent_datastore import admin
from agent_datastore.cli import cli
from agent_datastore.cli._base import _opens_new_embedded_store
from agent_datastore.cli._shell import _completions

from .helpers import interruptible

NOTICE = "using a new in-memory store; nothing persists"


def shell(*lines: str, options: tuple[str, ...] = ()) -> Result:
    """A script piped into ``shell`` on the embedded default store."""
    script = "".join(line + "\n" for line in lines)
    return CliRunner().invoke(
        cli,
        ["shell", *options],
        input=script,
        env={"AGENT_DATASTORE_URI": None},
        prog_name="agent-datastore",
    )


def test_a_script_runs_every_line_on_one_store() -> None:
    result = shell(
        "set ada indexer config '{\"timeout\": 30}'",
        "set ada indexer files:a 1 --namespace cache",
        "get ada indexer config --json",
        "keys ada indexer --json",
        "keys ada indexer -n cache",
        "users",
    )
    assert result.exit_code == 0, result.output
    # what set wrote, get and keys see: the store lives as long as the session
    assert result.stdout.startswith(
        "set 'config' in ada/indexer/default\nset 'files:a' in ada/indexer/cache\n{\n"
    )
    shown, _, rest = result.stdout.partition("\n}\n")
    item = json.loads(shown[shown.index("{") :] + "\n}")
    assert item["value"] == {"timeout": 30}
    assert rest == '[\n  "config"\n]\nfiles:a\nada\n'
    # opened once at the start: the notice once, and first
    assert result.stderr.count(NOTICE) == 1
    assert result.output.startswith("agent-datastore: no --uri")


def test_the_notice_appears_even_for_an_empty_script() -> None:
    result = shell()
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.count(NOTICE) == 1


def test_errors_of_each_kind_are_reported_as_on_the_command_line_and_the_session_goes_on() -> None:
    result = shell(
        "get u a nope",  # not found: 1
        "set u a k '{oops'",  # invalid input: 2
        "set u a",  # click: a missing argument
        "keys u a --colour",  # click: an unknown option
        "set u a d 0",
        "delete u a d",  # destructive, off a terminal, without --yes
        "nosuch",
        "set u a k 'unbalanced",
        "set u a k 1",
        "get u a k --json",
    )

    def on_the_command_line(*args: str) -> list[str]:
        # click's own usage error, as the command line prints it (its wording, "-h" or
        # "--help" in the hint, varies between click versions)
        alone = CliRunner().invoke(cli, list(args), prog_name="agent-datastore")
        assert alone.exit_code == 2
        return alone.stderr.splitlines()

    missing_argument = on_the_command_line("set", "u", "a")
    assert missing_argument[0] == "Usage: agent-datastore set [OPTIONS] USER AGENT KEY VALUE"
    assert missing_argument[-1].startswith("Error: Missing argument")
    assert "KEY" in missing_argument[-1]
    unknown_option = on_the_command_line("keys", "u", "a", "--colour")
    assert unknown_option[-1].startswith("Error: No such option")
    assert "--colour" in unknown_option[-1]
    assert result.stderr.splitlines() == [
        "agent-datastore: no --uri or AGENT_DATASTORE_URI: " + NOTICE,
        "agent-datastore: no key 'nope' in u/a/default",
        "agent-datastore: VALUE is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
        *missing_argument,
        *unknown_option,
        "agent-datastore: Delete 'd' from u/a/default? Refusing without --yes when not on a "
        "terminal.",
        "agent-datastore: no such command 'nosuch'; 'help' lists them",
        "agent-datastore: cannot split the line: no closing quotation",
    ]
    # the lines after the failures still ran
    assert result.stdout.startswith("set 'd' in u/a/default\nset 'k' in u/a/default\n")
    assert json.loads(result.stdout.split("\n", 2)[2])["value"] == 1
    assert result.exit_code == 1  # the first failure's


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        (["users", "stats"], 0),
        (["users", "get u a nope", "users"], 1),  # a later success does not hide it
        (["set u a k '{'", "get u a nope"], 2),  # the first failure's code, not the last's
        (["doctor", "set u a k '{'"], 1),  # a command that exits through click
        (["keys u a --limit 0", "get u a nope"], 2),  # click's usage error
        (["get u a nope", "exit", "set u a k '{'"], 1),
    ],
)
def test_the_session_exits_with_the_first_failures_code(lines: list[str], code: int) -> None:
    assert shell(*lines).exit_code == code


@pytest.mark.parametrize("word", ["exit", "quit", "  exit  "])
def test_exit_and_quit_end_the_session(word: str) -> None:
    result = shell("set u a k 1", word, "set u a j 2")
    assert result.exit_code == 0
    assert result.stdout == "set 'k' in u/a/default\n"


def test_stop_on_error_ends_at_the_first_failing_line_with_its_code() -> None:
    lines = ("set u a k 1", "set u a j '{'", "set u a i 3", "get u a nope")
    result = shell(*lines, options=("--stop-on-error",))
    assert result.exit_code == 2
    assert result.stdout == "set 'k' in u/a/default\n"
    assert result.stderr.splitlines()[-1].startswith("agent-datastore: VALUE is not valid JSON")
    assert shell(*lines).stdout.count("set '") == 2  # without it, the script goes on


def test_comments_and_blank_lines_are_skipped() -> None:
    result = shell("# set u a hidden 1", "", "   ", "  # indented", "set u a k 1", "keys u a")
    assert result.exit_code == 0
    assert result.stdout == "set 'k' in u/a/default\nk\n"
    assert result.stderr.count("\n") == 1  # the notice only


def test_a_bug_in_a_line_is_one_line_with_exit_5_and_the_session_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_store: object) -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(admin, "users", broken)
    result = shell("users", "set u a k 1")
    assert result.stderr.splitlines()[1:] == ["agent-datastore: internal error: RuntimeError: boom"]
    assert result.stdout == "set 'k' in u/a/default\n"
    assert result.exit_code == 5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("shell", "agent-datastore: shell is not available inside the shell"),
        ("serve --embedded", "agent-datastore: serve is not available inside the shell"),
        ("help serve", "agent-datastore: serve is not available inside the shell"),
        ("mcp --uri mongomock://", "agent-datastore: mcp is not available inside the shell"),
        ("--uri mongodb://127.0.0.1:1 users", "agent-datastore: --uri: the options of"),
        ("--version", "agent-datastore: --version: the options of"),
        ("exit now", "agent-datastore: exit takes no arguments"),
        ("help keys get", "agent-datastore: help takes at most one COMMAND"),
    ],
)
def test_what_cannot_run_on_a_line_is_refused_and_the_session_goes_on(
    line: str, message: str
) -> None:
    result = shell(line, "set u a k 1")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1].startswith(message)
    assert result.stdout == "set 'k' in u/a/default\n"


def test_help_lists_the_commands_and_the_builtins() -> None:
    result = shell("help")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert "set" in listed
    assert "export" in listed
    assert "shell" not in listed
    assert "serve" not in listed
    assert "mcp" not in listed
    assert "help" in listed
    assert "exit," in listed
    assert "  get             Show an item with its metadata, dates and size.\n" in result.stdout


@pytest.mark.parametrize("line", ["help keys", "keys --help", "keys -h"])
def test_a_commands_help_is_its_command_line_help(line: str) -> None:
    result = shell(line)
    assert result.exit_code == 0
    expected = CliRunner().invoke(cli, ["keys", "--help"], prog_name="agent-datastore").stdout
    assert result.stdout == expected
    assert result.stdout.startswith("Usage: agent-datastore keys [OPTIONS] USER AGENT\n")


def test_a_session_on_a_given_store_does_not_open_another() -> None:
    # the shell uses the store in the context as every command does: no notice, same data
    from agent_datastore import connect

    with connect("mongomock://") as store:
        store.proxy("ada", "indexer").set("k", 1)
        result = CliRunner().invoke(
            cli, ["shell"], input="keys ada indexer\nset ada indexer j 2\n", obj={"store": store}
        )
        assert result.exit_code == 0
        assert result.stdout == "k\nset 'j' in ada/indexer/default\n"
        assert result.stderr == ""
        assert store.proxy("ada", "indexer").get("j") == 2


@pytest.fixture
def probe() -> Iterator[None]:
    """A command that says whether it would open a new, empty in-memory store."""

    @click.command()
    @click.pass_context
    def probe(ctx: click.Context) -> None:
        click.echo(f"new embedded store: {_opens_new_embedded_store(ctx)}")

    cli.add_command(probe)
    try:
        yield
    finally:
        del cli.commands["probe"]


@pytest.mark.usefixtures("probe")
def test_a_line_runs_on_the_sessions_store_not_a_new_one() -> None:
    on_its_own = CliRunner().invoke(cli, ["probe"], env={"AGENT_DATASTORE_URI": None})
    assert on_its_own.stdout == "new embedded store: True\n"
    assert shell("probe").stdout == "new embedded store: False\n"


def _script() -> str:
    script = shutil.which("agent-datastore", path=str(Path(sys.executable).parent))
    assert script
    return script


def _environment(**changes: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "AGENT_DATASTORE_URI"}
    env.update(changes)
    return env


def test_stdout_and_stderr_keep_the_order_of_the_lines_through_one_pipe(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text(
        "set u a k 1\nget u a nope\nkeys u a\nnosuch\nkeys u a --json\nget u a gone\nusers\n"
    )
    with script.open() as stdin:
        # as "agent-datastore shell < script 2>&1": one pipe, two buffered streams
        run = subprocess.run(
            [_script(), "shell"],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_environment(),
            timeout=60,
        )
    assert run.stdout.decode().splitlines() == [
        "agent-datastore: no --uri or AGENT_DATASTORE_URI: " + NOTICE,
        "set 'k' in u/a/default",
        "agent-datastore: no key 'nope' in u/a/default",
        "k",
        "agent-datastore: no such command 'nosuch'; 'help' lists them",
        "[",
        '  "k"',
        "]",
        "agent-datastore: no key 'gone' in u/a/default",
        "u",
    ]
    assert run.returncode == 1


def test_off_a_terminal_ctrl_c_ends_the_script(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    session = subprocess.Popen(
        interruptible([_script(), "shell"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_environment(),
    )
    writer = None
    try:
        assert session.stdin
        # the first line waits on a FIFO that nobody writes; the later ones must not run
        session.stdin.write(f"import {fifo}\nset u a k 1\n".encode())
        session.stdin.close()
        deadline = time.monotonic() + 30
        while writer is None:  # opening the writer succeeds once the import has opened it
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        while session.poll() is None:  # again if it landed before the read blocked
            assert time.monotonic() < deadline
            session.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                session.wait(timeout=2)
        assert session.stdout
        shown = session.stdout.read().decode()
    finally:
        if writer is not None:
            os.close(writer)
        if session.poll() is None:
            session.kill()
        session.wait()
        if session.stdout:
            session.stdout.close()
    assert shown.splitlines()[1:] == ["agent-datastore: interrupted"]
    assert session.returncode == 130


@pytest.mark.parametrize(
    ("line", "completions"),
    [
        ("", sorted([*cli.commands.keys() - {"shell", "serve", "mcp"}, "exit", "help", "quit"])),
        ("e", ["ensure-indexes", "exit", "export"]),
        ("se", ["set"]),
        ("sh", []),  # not available on a line
        ("help ke", ["keys"]),
        ("keys ada indexer --", ["--help", "--json", "--limit", "--namespace", "--prefix"]),
        ("keys ada indexer --n", ["--namespace"]),
        ("get u a k -", ["--help", "--json", "--namespace", "-h", "-n"]),
        ("keys --json ", []),  # an argument: free text
        ("keys ada ind", []),
        ('set u a k \'{"a": 1} --', ["--help", "--json", "--metadata", "--namespace"]),
        ("nosuch --", []),
        ("serve --", []),
    ],
)
def test_the_completer_offers_commands_then_their_options(
    line: str, completions: list[str]
) -> None:
    assert _completions(line) == completions


class _Pty:
    """``agent-datastore`` on a pseudo-terminal that is its controlling terminal, so that a
    Ctrl-C typed at it reaches it as SIGINT; every wait is bounded."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import pty

        self.leader, follower = pty.openpty()
        # a new session takes the pty as its controlling terminal: Ctrl-C becomes SIGINT
        take_terminal = (
            "import fcntl, os, signal, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
            # SIGINT at its default: a test run with it ignored would pass that on
            "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", take_terminal, _script(), *args],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            start_new_session=True,
            env=env,
        )
        os.close(follower)
        self.shown = b""
        self.read_to = 0

    def expect(self, text: bytes, timeout: float = 30) -> bytes:
        """Waits until ``text`` appears after what was expected before; returns what came
        between."""
        deadline = time.monotonic() + timeout
        while text not in self.shown[self.read_to :]:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.leader], [], [], max(left, 0))
            chunk = b""
            if ready:
                try:
                    chunk = os.read(self.leader, 65536)
                except OSError:  # the other side closed
                    chunk = b""
            if not chunk:
                raise AssertionError(f"{text!r} did not appear; the terminal shows {self.shown!r}")
            self.shown += chunk
        start = self.read_to
        self.read_to = self.shown.index(text, start) + len(text)
        return self.shown[start : self.read_to]

    def type(self, keys: bytes) -> None:
        os.write(self.leader, keys)

    def interrupt(self, until: bytes) -> None:
        """Types Ctrl-C until ``until`` appears. A SIGINT that lands just before the process
        blocks (in select at the prompt, in read during a command) is only acted on when that
        call returns, since CPython runs signal handlers between bytecodes; a second one is."""
        deadline = time.monotonic() + 30
        while True:
            self.type(b"\x03")
            try:
                self.expect(until, timeout=2)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def close(self) -> int:
        """Waits for the exit code; a session that does not end fails with what it showed."""
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(AssertionError):
                self.expect(b"\0", timeout=1)  # whatever it still shows
            raise AssertionError(f"the session did not end; it shows {self.shown!r}") from None
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.leader >= 0:
            os.close(self.leader)
            self.leader = -1


PROMPT = b"agent-datastore> "


@pytest.fixture
def terminal_env(tmp_path: Path) -> dict[str, str]:
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("needs a pseudo-terminal")
    return _environment(AGENT_DATASTORE_HISTFILE=str(tmp_path / "history"), TERM="dumb")


def test_ctrl_c_at_the_prompt_and_during_a_command(
    tmp_path: Path, terminal_env: dict[str, str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    session = _Pty(["shell"], terminal_env)
    writer = None
    try:
        session.expect(NOTICE.encode())
        session.expect(PROMPT)
        session.type(b"set u a k 1\r")
        session.expect(b"set 'k' in u/a/default")
        session.expect(PROMPT)
        # Ctrl-C on a half-typed line: a fresh prompt, the line is dropped
        session.type(b"delete u a k --yes")
        session.expect(b"--yes")
        session.interrupt(until=PROMPT)
        # a command that waits (import reading a FIFO that nobody writes): Ctrl-C stops it
        session.type(f"import {fifo}\r".encode())
        deadline = time.monotonic() + 30
        while writer is None:  # opening the writer succeeds once the import has opened it
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert time.monotonic() < deadline, session.shown
                time.sleep(0.01)
        session.interrupt(until=b"agent-datastore: interrupted")
        session.expect(PROMPT)
        # the store is still there, and the key was not deleted
        # Tab completes the command and then its option
        session.type(b"ge\tu a k --js\t\r")
        session.expect(b"get u a k --json")
        session.expect(b'"value": 1')
        session.expect(PROMPT)
        session.type(b"exit\r")
        code = session.close()
    finally:
        if writer is not None:
            os.close(writer)
        session.stop()
    assert code == 130  # the interrupted line was the first to fail


def test_history_is_private_and_read_back_by_the_next_session(
    tmp_path: Path, terminal_env: dict[str, str]
) -> None:
    history = tmp_path / "history"
    history.write_text("".join(f"keys u a{number}\n" for number in range(1500)))
    history.chmod(0o644)  # made by hand, or by an older version: made private
    first = _Pty(["shell"], terminal_env)
    first.expect(PROMPT)
    first.type(b"set u a k 1\r")
    first.expect(PROMPT)
    first.type(b" set u a secret 2\r")  # a leading space keeps a line out of the history
    first.expect(PROMPT)
    first.type(b"\x04")  # Ctrl-D
    assert first.close() == 0
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    kept = history.read_text().splitlines()
    assert kept[-1] == "set u a k 1"
    assert len(kept) == 1000  # the newest lines, up to the cap
    assert "secret" not in history.read_text()

    # Ctrl-P brings back the last line; the in-memory store is new, so it sets 'k' again
    second = _Pty(["shell"], terminal_env)
    second.expect(PROMPT)
    second.type(b"\x10\r")
    second.expect(b"set 'k' in u/a/default")
    second.expect(PROMPT)  # typed while a command runs, Ctrl-D is the cooked terminal's EOF
    second.type(b"\x04")
    assert second.close() == 0


def test_an_empty_histfile_variable_keeps_no_history(
    tmp_path: Path, terminal_env: dict[str, str]
) -> None:
    env = {**terminal_env, "AGENT_DATASTORE_HISTFILE": "", "HOME": str(tmp_path)}
    session = _Pty(["shell"], env)
    session.expect(PROMPT)
    session.type(b"users\r")
    session.expect(PROMPT)
    session.type(b"\x04")
    assert session.close() == 0
    assert list(tmp_path.iterdir()) == []


def test_import_from_standard_input_is_refused_in_a_piped_session(tmp_path: Path) -> None:
    # the script is standard input: "import -" would take the lines after it as items
    result = shell("import -", "set u a k 1", "keys u a")
    assert result.exit_code == 2
    assert "standard input holds the shell's script" in result.stderr
    assert result.stdout == "set 'k' in u/a/default\nk\n"


def test_import_of_dev_stdin_is_refused_in_a_piped_session(tmp_path: Path) -> None:
    # standard input under another name is still the script
    script = "import /dev/stdin\n" + "".join(f"set u a k{i} {i}\n" for i in range(3))
    result = subprocess.run(
        [_script(), "shell"],
        input=script,
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
    )
    assert result.returncode == 2
    assert "standard input holds the shell's script" in result.stderr
    assert result.stdout.splitlines() == [f"set 'k{i}' in u/a/default" for i in range(3)]
