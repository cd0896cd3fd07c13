"""Every console block of the README and docs/ runs, and prints what it shows (see
``tests/console_blocks.py`` for the conventions); every ``agent-datastore`` command in a bash
block parses."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest

from agent_datastore.cli import cli

from .console_blocks import console_blocks, line_pattern, mismatch, run_page

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES_WITH_CONSOLE = [page for page in PAGES if console_blocks(page.read_text())]


def test_the_pages_hold_console_blocks() -> None:
    names = {page.name for page in PAGES_WITH_CONSOLE}
    assert {"README.md", "cli.md"} <= names


@pytest.mark.parametrize("page", PAGES_WITH_CONSOLE, ids=lambda page: page.name)
def test_console_blocks_print_what_they_show(page: Path, tmp_path: Path) -> None:
    assert run_page(page, tmp_path) > 0


def test_placeholders_match_only_what_they_stand_for() -> None:
    assert line_pattern("createdAt:  <time>").fullmatch("createdAt:  2026-11-26T12:51:31.403Z")
    assert not line_pattern("createdAt:  <time>").fullmatch("createdAt:  2026-11-26 12:51")
    assert line_pattern("round trip: <number> ms").fullmatch("round trip: 0.1 ms")
    assert line_pattern("limit <number> files").fullmatch("limit 18,420 files")
    assert not line_pattern("round trip: <number> ms").fullmatch("round trip: fast ms")
    assert line_pattern("error (…), Timeout: 2.0s").fullmatch("error (a (b) c), Timeout: 2.0s")
    assert not line_pattern("a.b").fullmatch("axb")  # the rest is literal


def test_a_difference_is_reported_with_the_line() -> None:
    assert mismatch(["ada", "bob"], ["ada", "bob  "]) is None
    assert "line 2 differs" in (mismatch(["ada", "bob"], ["ada", "eve"]) or "")
    assert "printed more" in (mismatch(["ada"], ["ada", "bob"]) or "")
    assert "printed less" in (mismatch(["ada", "bob"], ["ada"]) or "")


def test_a_wrong_transcript_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ echo one; echo two >&2\none\nthree\n```\n")
    with pytest.raises(AssertionError, match="line 2 differs"):
        run_page(page, tmp_path)


def test_state_flows_from_block_to_block_and_sessions_read_what_is_typed(
    tmp_path: Path,
) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```console\n$ export GREETING=hello\n$ false\n$ echo $?\n1\n```\n\n"
        "```console\n$ echo $GREETING\nhello\n```\n\n"
        "```console\n$ agent-datastore shell\n"
        "agent-datastore: no --uri or AGENT_DATASTORE_URI: using a new in-memory store; "
        "nothing persists\n"
        "agent-datastore> set u a k '{\"n\": 1}'\nset 'k' in u/a/default\n```\n\nProse.\n\n"
        "```console\nagent-datastore> get u a k --json\n{\n…\n```\n"
    )
    blocks = console_blocks(page.read_text())
    assert [c.text for c in blocks[0].commands] == ["export GREETING=hello", "false", "echo $?"]
    assert blocks[2].commands[0].typed == ["set u a k '{\"n\": 1}'"]
    assert blocks[3].continuation[0] == "agent-datastore> get u a k --json"


def test_ctrl_c_interrupts_once_the_output_before_it_is_shown(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```console\n"
        "$ trap 'echo stopped; exit 130' INT; echo waiting; while true; do sleep 0.1; done\n"
        "waiting\n^C\nstopped\n$ echo $?\n130\n```\n"
    )
    assert run_page(page, tmp_path) == 2


def _commands_in_bash_blocks(page: str) -> list[tuple[str, list[str]]]:
    found = []
    for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", page, re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            found += _commands_in_line(block, line)
    return found


def _commands_in_line(block: str, line: str) -> list[tuple[str, list[str]]]:
    found = []
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    for start, word in enumerate(words):
        if Path(word).name == "agent-datastore":
            arguments: list[str] = []
            for argument in words[start + 1 :]:
                if argument in {"|", "&&", "||", ";", ">", "<", "&"}:
                    break
                arguments.append(argument)
            found.append((block, arguments))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_bash_blocks_are_valid_and_their_agent_datastore_commands_parse(page: Path) -> None:
    text = page.read_text()
    for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        checked = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
        assert checked.returncode == 0, f"{page.name}: {checked.stderr}\n{block}"
    for block, arguments in _commands_in_bash_blocks(text):
        named = [i for i, word in enumerate(arguments) if word in cli.commands]
        assert named, f"{page.name}: no command in agent-datastore {shlex.join(arguments)}"
        name = arguments[named[0]]
        command = cli.commands[name]
        try:
            with cli.make_context("agent-datastore", arguments[: named[0] + 1]) as context:
                command.make_context(name, arguments[named[0] + 1 :], parent=context).close()
        except click.BadParameter as error:
            if "does not exist" not in error.format_message():  # the reader's own files
                raise AssertionError(f"{page.name}: {error.format_message()}\n{block}") from None
        except click.UsageError as error:
            raise AssertionError(f"{page.name}: {error.format_message()}\n{block}") from None


def test_a_failing_command_must_show_its_exit_status(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ echo no; false\nno\n```\n")
    with pytest.raises(AssertionError, match="does not show with"):
        run_page(page, tmp_path)
    page.write_text("```console\n$ echo no; false\nno\n$ echo $?\n1\n```\n")
    assert run_page(page, tmp_path) == 2


def test_nothing_that_looks_like_a_transcript_escapes_the_runner(tmp_path: Path) -> None:
    # a fence with a title is still a console block, and so is checked
    titled = '```console title="x"\n$ echo one\ntwo\n```\n'
    assert console_blocks(titled)[0].commands[0].shown == ["two"]
    # a session's lines and a command in one block: neither could be checked as shown
    mixed = "```console\nagent-datastore> users\nada\n$ echo one\none\n```\n"
    with pytest.raises(AssertionError, match="holds no \\$ command"):
        console_blocks(mixed)
    # a transcript in another kind of block
    with pytest.raises(AssertionError, match="only a ```console block has checked"):
        console_blocks("```text\n$ agent-datastore users\nada\n```\n")
