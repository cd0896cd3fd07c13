"""``export`` and ``import``: no command loses a backup, and no line stops an import."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from bson.errors import InvalidDocument
from click.testing import CliRunner, Result
from pymongo.errors import AutoReconnect, OperationFailure

import agent_datastore
from agent_datastore import DataStore, admin
from agent_datastore.cli import cli

SCRIPT = shutil.which("agent-datastore", path=str(Path(sys.executable).parent))
NIGHTLY = Path(__file__).parent.parent / "scripts" / "nightly_export.sh"


@pytest.fixture
def store() -> Iterator[DataStore]:
    with agent_datastore.connect("mongomock://") as embedded:
        ada = embedded.proxy("ada", "indexer")
        ada.set_many({"config": {"timeout": 30}, "files:a": 1}, metadata={"v": 1})
        embedded.proxy("ada", "search").set("k", None)
        embedded.proxy("bob", "indexer").set("k", [1, 2, 3])
        yield embedded


@pytest.fixture
def target() -> Iterator[DataStore]:
    with agent_datastore.connect("mongomock://") as empty:
        yield empty


def run(store: DataStore, *args: str, input: bytes | str | None = None) -> Result:
    # the store is handed over in the context object, as a shell session holds its store
    return CliRunner().invoke(cli, list(args), obj={"store": store}, input=input)


def record(key: str, user: Any = "ada", agent: str = "indexer", **fields: Any) -> dict[str, Any]:
    """An export line's record."""
    return {
        "userId": user,
        "agentName": agent,
        "namespace": "default",
        "key": key,
        "value": {"n": key},
        "metadata": {},
        "createdAt": "2026-01-02T03:04:05.678Z",
        "updatedAt": "2026-01-02T03:04:05.678Z",
        "version": 1,
        "expiresAt": None,
        **fields,
    }


def line(key: str, **fields: Any) -> bytes:
    return json.dumps(record(key, **fields)).encode()


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(text + b"\n" for text in lines))
    return path


def only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# export


def test_export_on_the_embedded_default_refuses_before_opening_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENT_DATASTORE_URI", raising=False)
    new = tmp_path / "new.jsonl"
    refused = CliRunner().invoke(cli, ["export", "-o", str(new)])
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert refused.stderr.startswith("agent-datastore: nothing to export: ")
    assert "--uri" in refused.stderr
    assert "AGENT_DATASTORE_URI" in refused.stderr
    assert "in-memory store; nothing persists" not in refused.stderr  # no store was opened
    assert not new.exists()

    backup = tmp_path / "backup.jsonl"
    backup.write_bytes(b"precious\n")
    for args in (["-o", str(backup)], ["-o", str(backup), "--force"], ["-o", "-"]):
        assert CliRunner().invoke(cli, ["export", *args]).exit_code == 2
    assert backup.read_bytes() == b"precious\n"
    assert only_file(tmp_path) == ["backup.jsonl"]

    # a URI given explicitly, mongomock:// too, is the operator's choice
    named = CliRunner().invoke(cli, ["--uri", "mongomock://", "export", "-o", str(new)])
    assert named.exit_code == 0, named.stderr
    assert new.read_bytes() == b""


def test_export_in_a_session_exports_the_sessions_store(store: DataStore, tmp_path: Path) -> None:
    dump = tmp_path / "items.jsonl"
    result = run(store, "export", "-o", str(dump))
    assert (result.exit_code, result.stdout) == (0, f"exported 4 items to {dump}\n")


@pytest.mark.skipif(SCRIPT is None, reason="the console script is not installed")
def test_the_console_script_refuses_to_export_the_embedded_default(tmp_path: Path) -> None:
    assert SCRIPT is not None
    environment = {k: v for k, v in os.environ.items() if k != "AGENT_DATASTORE_URI"}
    backup = tmp_path / "items.jsonl"
    backup.write_bytes(b"precious\n")
    result = subprocess.run(
        [SCRIPT, "export", "-o", str(backup)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("agent-datastore: nothing to export: ")
    assert result.stderr.count("\n") == 1
    assert backup.read_bytes() == b"precious\n"
    assert only_file(tmp_path) == ["items.jsonl"]


def test_an_empty_export_never_replaces_a_non_empty_file_without_force(
    store: DataStore, tmp_path: Path
) -> None:
    backup = tmp_path / "items.jsonl"
    ok = run(store, "export", "-o", str(backup))
    assert ok.exit_code == 0
    before = backup.read_bytes()
    assert len(before.splitlines()) == 4

    refused = run(store, "export", "nobody", "-o", str(backup))
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        f"agent-datastore: the export holds no items: {backup} was left as it was "
        "(--force replaces it with an empty export)\n"
    )
    assert backup.read_bytes() == before
    assert only_file(tmp_path) == ["items.jsonl"]

    forced = run(store, "export", "nobody", "-o", str(backup), "--force", "--json")
    assert forced.exit_code == 0
    assert json.loads(forced.stdout) == {"exported": 0, "skipped": 0, "file": str(backup)}
    assert backup.read_bytes() == b""

    # an empty file, or none at all, simply gets the empty export
    assert run(store, "export", "nobody", "-o", str(backup)).exit_code == 0
    missing = tmp_path / "missing.jsonl"
    assert run(store, "export", "nobody", "-o", str(missing)).stdout == (
        f"exported 0 items to {missing}\n"
    )
    assert missing.read_bytes() == b""


def test_an_empty_gzip_export_may_replace_an_empty_archive_but_not_a_full_one(
    store: DataStore, tmp_path: Path
) -> None:
    archive = tmp_path / "items.jsonl.gz"
    assert run(store, "export", "nobody", "--gzip", "-o", str(archive)).exit_code == 0
    assert gzip.decompress(archive.read_bytes()) == b""
    # an archive of nothing holds nothing to lose
    assert run(store, "export", "nobody", "--gzip", "-o", str(archive)).exit_code == 0
    assert run(store, "export", "--gzip", "-o", str(archive)).exit_code == 0
    full = archive.read_bytes()
    assert run(store, "export", "nobody", "--gzip", "-o", str(archive)).exit_code == 1
    assert archive.read_bytes() == full
    damaged = full[: len(full) // 2]
    archive.write_bytes(damaged)
    assert run(store, "export", "nobody", "--gzip", "-o", str(archive)).exit_code == 1
    assert archive.read_bytes() == damaged


class BrokenCursor:
    """The store's collection, but every find breaks off after two documents."""

    def __init__(self, collection: Any, error: BaseException) -> None:
        self._collection = collection
        self._error = error

    def find(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        documents = iter(self._collection.find(*args, **kwargs))
        yield next(documents)
        yield next(documents)
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


@pytest.mark.parametrize(
    ("error", "exit_code", "message"),
    [
        (AutoReconnect("connection reset"), 3, "database unavailable"),
        (RuntimeError("a bug"), 5, "internal error: RuntimeError: a bug"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
    ids=["database", "bug", "ctrl-c"],
)
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_a_failing_export_leaves_the_target_untouched_and_no_temporary_file(
    store: DataStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    exit_code: int,
    message: str,
    compress: bool,
) -> None:
    backup = tmp_path / "items.jsonl"
    backup.write_bytes(b"yesterday's export\n")
    monkeypatch.setattr(store, "_target", BrokenCursor(store._target, error))
    options = ["--gzip"] if compress else []
    result = run(store, "export", "-o", str(backup), *options)
    assert result.exit_code == exit_code
    assert result.stderr.startswith(f"agent-datastore: {message}")
    assert backup.read_bytes() == b"yesterday's export\n"
    assert only_file(tmp_path) == ["items.jsonl"]
    # the same for a file that did not exist
    result = run(store, "export", "-o", str(tmp_path / "new.jsonl"), *options)
    assert result.exit_code == exit_code
    assert only_file(tmp_path) == ["items.jsonl"]


def test_a_failing_gzip_export_to_standard_output_is_not_a_complete_archive(
    store: DataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "_target", BrokenCursor(store._target, AutoReconnect("reset")))
    result = run(store, "export", "--gzip", "-o", "-")
    assert result.exit_code == 3
    with pytest.raises(EOFError):  # cut off: no gzip trailer
        gzip.decompress(result.stdout_bytes)


def test_export_errors_name_the_users_path(store: DataStore, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dir" / "x.jsonl"
    result = run(store, "export", "-o", str(missing))
    assert result.exit_code == 2
    assert result.stderr == f"agent-datastore: No such file or directory: {missing}\n"
    relative = run(store, "export", "-o", "no-such-dir/x.jsonl")
    assert relative.stderr == "agent-datastore: No such file or directory: no-such-dir/x.jsonl\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_directory_is_named_by_the_users_path(
    store: DataStore, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "items.jsonl").write_bytes(b"old\n")
    locked.chmod(0o500)
    try:
        result = run(store, "export", "-o", str(locked / "items.jsonl"))
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2
    assert result.stderr == f"agent-datastore: Permission denied: {locked / 'items.jsonl'}\n"
    assert (locked / "items.jsonl").read_bytes() == b"old\n"


def test_export_keeps_the_permissions_of_the_file_it_replaces(
    store: DataStore, tmp_path: Path
) -> None:
    backup = tmp_path / "private.jsonl"
    backup.write_bytes(b"old\n")
    backup.chmod(0o600)
    assert run(store, "export", "-o", str(backup)).exit_code == 0
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert len(backup.read_bytes().splitlines()) == 4

    umask = os.umask(0o027)
    try:
        new = tmp_path / "new.jsonl"
        assert run(store, "export", "-o", str(new)).exit_code == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # what open() gives a new file

    # through a symbolic link, the file is replaced and the link stays a link
    link = tmp_path / "latest.jsonl"
    link.symlink_to(backup.name)
    assert run(store, "export", "bob", "-o", str(link)).exit_code == 0
    assert link.is_symlink()
    assert len(backup.read_bytes().splitlines()) == 1
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_gzip_round_trips_through_a_file_and_standard_input(
    store: DataStore, target: DataStore, tmp_path: Path
) -> None:
    plain, packed = tmp_path / "items.jsonl", tmp_path / "items.jsonl.gz"
    assert run(store, "export", "-o", str(plain)).exit_code == 0
    exported = run(store, "export", "--gzip", "-o", str(packed))
    assert (exported.exit_code, exported.stdout) == (0, f"exported 4 items to {packed}\n")
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    to_stdout = run(store, "export", "--gzip", "-o", "-")
    assert to_stdout.stdout_bytes == packed.read_bytes()  # no name or time in the header

    items = list(admin.export_items(store))
    result = run(target, "import", str(packed))
    assert (result.exit_code, result.stdout) == (0, "imported 4 items, rejected 0 lines\n")
    assert list(admin.export_items(target)) == items
    target.collection.delete_many({})
    piped = run(target, "import", "-", input=packed.read_bytes())
    assert (piped.exit_code, piped.stdout) == (0, "imported 4 items, rejected 0 lines\n")
    assert list(admin.export_items(target)) == items


@pytest.mark.skipif(SCRIPT is None, reason="the console script is not installed")
def test_the_console_script_reads_gzip_from_a_pipe(tmp_path: Path) -> None:
    assert SCRIPT is not None
    packed = gzip.compress(b"".join(line(f"k{i}") + b"\n" for i in range(5)))
    result = subprocess.run(
        [SCRIPT, "--uri", "mongomock://", "import", "-"],
        input=packed,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"imported 5 items, rejected 0 lines\n"


def test_other_compressions_are_named_and_a_truncated_gzip_keeps_what_was_read(
    target: DataStore, tmp_path: Path
) -> None:
    packed = tmp_path / "items.jsonl.bz2"
    packed.write_bytes(bz2.compress(line("a") + b"\n"))
    refused = run(target, "import", str(packed))
    assert refused.exit_code == 2
    assert f"{packed} is compressed with bzip2" in refused.stderr

    # values that do not compress, so that half the file holds about half the lines
    values = [os.urandom(500).hex() for _ in range(200)]
    whole = gzip.compress(
        b"".join(line(f"k{i:03d}", value=v) + b"\n" for i, v in enumerate(values))
    )
    truncated = tmp_path / "items.jsonl.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    result = run(target, "import", str(truncated), "--batch-size", "30")
    assert result.exit_code == 2
    assert f"agent-datastore: {truncated}: cannot read past line " in result.stderr
    read = int(result.stderr.split("cannot read past line ")[1].split()[0])
    assert 50 < read < 150
    # every line read before the break is imported, the batch in hand included
    assert admin.count_items(target) == read
    assert f"after writing {read} items" in result.stderr


# import: no line stops it


def test_600_good_lines_a_bad_one_and_10_more_import_610(target: DataStore, tmp_path: Path) -> None:
    lines = [line(f"k{i:03d}") for i in range(600)]
    lines.append(line("bad", createdAt="0001-01-01T00:00:00+01:00"))
    lines += [line(f"z{i}") for i in range(10)]
    dump = write_lines(tmp_path / "items.jsonl", lines)
    result = run(target, "import", str(dump))
    assert result.exit_code == 4
    assert result.stdout == "imported 610 items, rejected 1 line\n"
    assert result.stderr == (
        f"agent-datastore: {dump}:601: createdAt '0001-01-01T00:00:00+01:00' is outside "
        "the years 1 to 9999 in UTC\n"
    )
    assert admin.count_items(target) == 610


CRAFTED: dict[str, tuple[bytes, str]] = {
    "date before year 1 in UTC": (
        line("x", createdAt="0001-01-01T00:00:00+01:00"),
        "createdAt '0001-01-01T00:00:00+01:00' is outside the years 1 to 9999 in UTC",
    ),
    "date after 9999 in UTC": (
        line("x", updatedAt="9999-12-31T23:30:00-01:00"),
        "updatedAt '9999-12-31T23:30:00-01:00' is outside the years 1 to 9999 in UTC",
    ),
    "expiry after 9999 in UTC": (
        line("x", expiresAt="9999-12-31T23:59:59.999-00:01"),
        "expiresAt '9999-12-31T23:59:59.999-00:01' is outside the years 1 to 9999 in UTC",
    ),
    "date without a zone": (line("x", createdAt="2026-01-01T00:00:00"), "time zone"),
    "nested 5,000 deep": (
        line("x", value=None).replace(b'"value": null', b'"value": ' + b"[" * 5000 + b"]" * 5000),
        # up to 3.12 json stops at its recursion limit ("...to parse"); 3.13 parses it, and
        # the store's 400-level limit refuses it ("value is nested too deeply")
        "nested too deeply",
    ),
    "nested past the store's limit": (
        line("x", value=None).replace(b'"value": null', b'"value": ' + b"[" * 450 + b"]" * 450),
        "nested",
    ),
    "not UTF-8": (line("x").replace(b'"x"', b'"\xff\xfe"'), "'utf-8' codec can't decode"),
    "user id a number": (line("x", user=5), "user_id must be a str, not int"),
    "metadata a list": (line("x", metadata=[1]), "metadata"),
    "version a string": (line("x", version="3"), "version must be an integer"),
    "createdAt a number": (line("x", createdAt=0), "createdAt must be an ISO 8601 string"),
    "an array": (b"[1, 2]", "a line must hold a JSON object"),
    "a string": (b'"text"', "a line must hold a JSON object"),
    "not JSON": (b"{not json", "Expecting property name"),
    "unknown field": (line("x", extra=1), "unknown field extra"),
    "NaN": (line("x", value=float("nan")), "not JSON compliant: nan"),
    "an empty key": (line(""), "key must not be empty"),
}


@pytest.mark.parametrize("batch_size", ["2", "500"])
def test_every_crafted_line_is_rejected_by_number_and_every_good_line_imported(
    target: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: str
) -> None:
    monkeypatch.setattr(admin, "MAX_LINE_BYTES", 100_000)
    crafted = [*CRAFTED.values(), (line("x", value="y" * 1_000_000), "longer than 100,000 bytes")]
    lines = [line("first")]
    expected: dict[int, str] = {}
    for i, (text, reason) in enumerate(crafted):
        lines.append(text)
        expected[len(lines)] = reason
        lines.append(line(f"good-{i:02d}"))
    dump = write_lines(tmp_path / "crafted.jsonl", lines)

    result = run(target, "import", str(dump), "--json", "--batch-size", batch_size)
    assert result.exit_code == 4
    assert json.loads(result.stdout) == {
        "imported": len(crafted) + 1,
        "rejected": len(crafted),
        "skipped": 0,
    }
    rejected = [json.loads(text) for text in result.stderr.splitlines()]
    assert [r["line"] for r in rejected] == list(expected)
    for entry in rejected:
        assert expected[entry["line"]] in entry["reason"], entry
    keys = target.proxy("ada", "indexer").list_keys()
    assert keys == ["first"] + [f"good-{i:02d}" for i in range(len(crafted))]


def test_a_huge_line_is_skipped_without_being_held(
    target: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "MAX_LINE_BYTES", 1 << 20)
    dump = tmp_path / "huge.jsonl"
    with dump.open("wb") as out:
        out.write(line("before") + b"\n")
        out.write(b'{"value": "' + b"x" * (1 << 20) * 24)  # 24 MiB on one line
        out.write(b'"}\n' + line("after") + b"\n")
    tracemalloc.start()
    try:
        result = run(target, "import", str(dump))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 4
    assert result.stdout == "imported 2 items, rejected 1 line\n"
    assert f"{dump}:2: longer than 1,048,576 bytes" in result.stderr
    assert peak < 8 << 20  # a few chunks of the line at most, never all of it


def test_the_longest_line_import_holds_is_above_any_export_line() -> None:
    # every byte of a 16 MiB document spelled as \u0001 still fits
    assert admin.MAX_LINE_BYTES > 6 * 16 * 1024 * 1024


def test_rejected_lines_are_reported_as_they_are_met_and_never_kept(target: DataStore) -> None:
    reported: list[int] = []
    reported_before_each_line: list[int] = []

    def lines() -> Iterator[tuple[int, bytes]]:
        for number in range(1, 6):
            reported_before_each_line.append(len(reported))
            yield number, b"{bad"

    def on_reject(number: int, reason: str) -> None:
        reported.append(number)

    *_, report = admin.import_items(target, lines(), on_reject=on_reject)
    assert reported_before_each_line == [0, 1, 2, 3, 4]
    assert (report.imported, report.rejected) == (0, 5)
    assert not any(isinstance(value, list) for value in vars(report).values())


def _peak_of_import(target: DataStore, dump: Path, rejects: Path) -> int:
    tracemalloc.start()
    try:
        result = run(target, "import", str(dump), "--json", "--rejects", str(rejects))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 4
    return peak


def test_import_json_memory_does_not_grow_with_rejected_lines(
    target: DataStore, tmp_path: Path
) -> None:
    few = write_lines(tmp_path / "few.jsonl", [b"{not json"] * 2_000)
    many = write_lines(tmp_path / "many.jsonl", [b"{not json"] * 40_000)
    _peak_of_import(target, few, tmp_path / "warm-up.jsonl")
    small = _peak_of_import(target, few, tmp_path / "few-rejects.jsonl")
    large = _peak_of_import(target, many, tmp_path / "many-rejects.jsonl")
    # a list of 38,000 rejections would be several MB
    assert large - small < 1 << 20
    assert len((tmp_path / "many-rejects.jsonl").read_text().splitlines()) == 40_000


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_rejects_file_takes_the_rejected_lines_instead_of_stderr(
    target: DataStore, tmp_path: Path, as_json: bool
) -> None:
    dump = write_lines(tmp_path / "items.jsonl", [line("a"), b"{not json", line("b"), b"[]"])
    rejects = tmp_path / "rejects.jsonl"
    options = ["--json"] if as_json else []
    result = run(target, "import", str(dump), "--rejects", str(rejects), *options)
    assert result.exit_code == 4
    assert result.stderr == ""
    if as_json:
        assert json.loads(result.stdout) == {"imported": 2, "rejected": 2, "skipped": 0}
    else:
        assert result.stdout == "imported 2 items, rejected 2 lines\n"
    entries = [json.loads(text) for text in rejects.read_text().splitlines()]
    assert [(e["line"], e["reason"]) for e in entries] == [
        (2, "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (4, "a line must hold a JSON object"),
    ]

    # no rejected line: the file is there, and empty
    clean = write_lines(tmp_path / "clean.jsonl", [line("c")])
    assert run(target, "import", str(clean), "--rejects", str(rejects)).exit_code == 0
    assert rejects.read_text() == ""

    # the input itself is never taken for the rejects, which would empty it
    backup = clean.read_bytes()
    same = run(target, "import", str(clean), "--rejects", str(tmp_path / "." / "clean.jsonl"))
    assert same.exit_code == 2
    assert "--rejects names the file being imported" in same.stderr
    assert clean.read_bytes() == backup

    unwritable = tmp_path / "no-such-dir" / "rejects.jsonl"
    refused = run(target, "import", str(clean), "--rejects", str(unwritable))
    assert refused.exit_code == 2
    assert refused.stderr == f"agent-datastore: No such file or directory: {unwritable}\n"


def test_text_rejects_and_the_grammar_of_counts(target: DataStore, tmp_path: Path) -> None:
    dump = write_lines(tmp_path / "items.jsonl", [line("a"), b"[]"])
    one = run(target, "import", str(dump))
    assert one.stdout == "imported 1 item, rejected 1 line\n"
    assert one.stderr == f"agent-datastore: {dump}:2: a line must hold a JSON object\n"
    skipped = run(target, "import", str(dump), "--skip", "1")
    assert skipped.stdout == "imported 0 items, rejected 1 line, skipped 1 line\n"
    assert run(target, "import", str(dump), "--skip", "2").stdout == (
        "imported 0 items, rejected 0 lines, skipped 2 lines\n"
    )


# import: only the database stops it


class FailingBulkWrite:
    """The store's collection, but its second bulk write fails."""

    def __init__(self, collection: Any, error: BaseException) -> None:
        self._collection = collection
        self._error = error
        self.calls = 0

    def bulk_write(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            raise self._error
        return self._collection.bulk_write(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


@pytest.mark.parametrize(
    ("error", "exit_code", "message"),
    [
        (AutoReconnect("connection reset"), 3, "database unavailable (AutoReconnect: "),
        (OperationFailure("not authorized", 13), 4, "the database refused the operation"),
    ],
    ids=["unavailable", "refused"],
)
def test_a_database_failure_stops_the_import_and_says_where_to_resume(
    target: DataStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    exit_code: int,
    message: str,
) -> None:
    lines = [line(f"k{i:02d}") for i in range(1, 11)]
    lines.insert(4, b"{not json")  # line 5, in the batch that fails
    dump = write_lines(tmp_path / "items.jsonl", lines)
    monkeypatch.setattr(target, "_target", FailingBulkWrite(target._target, error))

    stopped = run(target, "import", str(dump), "--batch-size", "3")
    assert stopped.exit_code == exit_code
    assert stopped.stdout == ""
    *rejected, last = stopped.stderr.splitlines()
    assert rejected == [
        f"agent-datastore: {dump}:5: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)"
    ]
    assert last.startswith(f"agent-datastore: {message}")
    assert last.endswith(
        "; the import stopped after writing 3 items; run it again with --skip 3 to resume"
    )
    assert target.proxy("ada", "indexer").list_keys() == ["k01", "k02", "k03"]

    resumed = run(target, "import", str(dump), "--batch-size", "3", "--skip", "3")
    assert resumed.exit_code == 4  # line 5 again
    assert resumed.stdout == "imported 7 items, rejected 1 line, skipped 3 lines\n"
    assert target.proxy("ada", "indexer").list_keys() == [f"k{i:02d}" for i in range(1, 11)]


def test_ctrl_c_during_an_import_says_where_to_resume(
    target: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = write_lines(tmp_path / "items.jsonl", [line(f"k{i}") for i in range(6)])
    interrupted = FailingBulkWrite(target._target, KeyboardInterrupt())
    monkeypatch.setattr(target, "_target", interrupted)
    result = run(target, "import", str(dump), "--batch-size", "2")
    assert result.exit_code == 130
    assert result.stderr == (
        "agent-datastore: interrupted; the import stopped after writing 2 items; "
        "run it again with --skip 2 to resume\n"
    )


def test_a_database_stop_under_json_prints_the_resume_point(
    target: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = write_lines(tmp_path / "items.jsonl", [line(f"k{i}") for i in range(6)])
    failing = FailingBulkWrite(target._target, AutoReconnect("connection reset"))
    monkeypatch.setattr(target, "_target", failing)
    result = run(target, "import", str(dump), "--batch-size", "2", "--skip", "1", "--json")
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert summary["error"].startswith("database unavailable")
    assert (summary["imported"], summary["rejected"], summary["resume_skip"]) == (2, 0, 3)


def test_an_item_the_driver_cannot_send_costs_only_its_own_line(
    target: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class RefusesOneItem:
        def __init__(self, collection: Any) -> None:
            self._collection = collection

        def bulk_write(self, requests: list[Any], **kwargs: Any) -> Any:
            if any(request._filter["key"] == "bad" for request in requests):
                raise InvalidDocument("cannot encode object")
            return self._collection.bulk_write(requests, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._collection, name)

    monkeypatch.setattr(target, "_target", RefusesOneItem(target._target))
    dump = write_lines(tmp_path / "items.jsonl", [line("a"), line("bad"), line("c")])
    result = run(target, "import", str(dump))
    assert result.exit_code == 4
    assert result.stdout == "imported 2 items, rejected 1 line\n"
    assert f"{dump}:2: cannot encode" in result.stderr
    assert target.proxy("ada", "indexer").list_keys() == ["a", "c"]


# import: --user and --agent


def test_user_and_agent_refuse_lines_outside_their_scope(target: DataStore, tmp_path: Path) -> None:
    bob = target.proxy("bob", "indexer")
    bob.set("k", "bob's own")
    lines = [
        line("a"),
        line("k", user="bob", value="overwritten"),
        line("b", agent="search"),
        line("c"),
    ]
    dump = write_lines(tmp_path / "ada.jsonl", lines)

    result = run(target, "import", str(dump), "--user", "ada")
    assert result.exit_code == 4
    assert result.stdout == "imported 3 items, rejected 1 line\n"
    assert result.stderr == f"agent-datastore: {dump}:2: outside --user ada\n"
    assert bob.get("k") == "bob's own"

    result = run(target, "import", str(dump), "--user", "ada", "--agent", "indexer", "--json")
    rejected = [json.loads(text) for text in result.stderr.splitlines()]
    assert rejected == [
        {"line": 2, "reason": "outside --user ada --agent indexer"},
        {"line": 3, "reason": "outside --user ada --agent indexer"},
    ]
    assert bob.get("k") == "bob's own"

    spaced = run(target, "import", str(dump), "--user", "ada lovelace")
    assert f"{dump}:1: outside --user 'ada lovelace'" in spaced.stderr

    usage = run(target, "import", str(dump), "--agent", "indexer")
    assert usage.exit_code == 2
    assert "--agent needs --user" in usage.stderr
    assert run(target, "import", str(dump), "--user", "").exit_code == 2


# the nightly script


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    directory = tmp_path / "backups with spaces"
    directory.mkdir()
    for old in ("2020-01-01", "2020-01-02", "2020-01-03"):
        (directory / f"agent-datastore-{old}.jsonl.gz").write_bytes(gzip.compress(line(old)))
    return directory


def _nightly(directory: Path, uri: str, keep: str = "2") -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    environment["AGENT_DATASTORE_URI"] = uri
    return subprocess.run(
        ["bash", str(NIGHTLY), str(directory), keep],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def _archives(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_nightly_export_of_no_items_keeps_every_archive(backups: Path) -> None:
    from .standin import StandInServer

    before = _archives(backups)
    server = StandInServer()
    try:
        result = _nightly(backups, server.uri)
        assert result.returncode == 1
        assert "the store holds no items tonight" in result.stderr
        assert result.stdout == ""
        assert _archives(backups) == before  # none written, none rotated

        # today's archive, already written by an earlier run, is kept as it was
        today = backups / f"agent-datastore-{datetime.now(timezone.utc):%Y-%m-%d}.jsonl.gz"
        today.write_bytes(gzip.compress(line("today") + b"\n"))
        before = _archives(backups)
        result = _nightly(backups, server.uri)
        assert result.returncode == 1
        assert "kept every archive" in result.stderr
        assert _archives(backups) == before
    finally:
        server.stop()


def test_nightly_export_archives_import_directly(backups: Path, target: DataStore) -> None:
    from .standin import StandInServer

    server = StandInServer()
    try:
        for i in range(3):
            stored = record(f"k{i}", value=i)
            for name in ("createdAt", "updatedAt"):
                stored[name] = datetime(2026, 1, 2, 3, 4, 5, 678000)
            del stored["expiresAt"]
            server.put(stored)
        result = _nightly(backups, server.uri)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    newest = sorted(backups.iterdir())[-1]
    assert result.stdout == f"exported 3 items to {newest}\n"
    assert len(list(backups.iterdir())) == 2
    imported = run(target, "import", str(newest))
    assert imported.stdout == "imported 3 items, rejected 0 lines\n"
    assert target.proxy("ada", "indexer").get("k2") == 2


def test_a_termination_signal_during_an_export_leaves_the_target_and_no_temporary_file(
    store: DataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cron's timeout sends SIGTERM: the export stops as for Ctrl-C, and cleans up
    backup = tmp_path / "items.jsonl"
    backup.write_bytes(b"yesterday's export\n")
    real_lines = admin.export_lines

    def lines_then_sigterm(*args: Any) -> Iterator[tuple[str | None, str | None]]:
        for number, entry in enumerate(real_lines(*args)):
            if number == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield entry

    class Unhandled(Exception):
        pass

    def outside_the_command(signal_number: int, _frame: object) -> None:
        raise Unhandled  # what the signal would do if the command left it to its caller

    monkeypatch.setattr(admin, "export_lines", lines_then_sigterm)
    previous = signal.signal(signal.SIGTERM, outside_the_command)
    try:
        result = run(store, "export", "-o", str(backup))
        # the handler the command found is back
        assert signal.getsignal(signal.SIGTERM) is outside_the_command
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert "terminated by SIGTERM" in result.stderr
    assert backup.read_bytes() == b"yesterday's export\n"
    assert only_file(tmp_path) == ["items.jsonl"]


def test_export_to_a_name_ending_in_a_slash_refuses(store: DataStore, tmp_path: Path) -> None:
    result = run(store, "export", "-o", f"{tmp_path}/newdir/")
    assert result.exit_code == 2
    assert "names a directory" in result.stderr
    assert only_file(tmp_path) == []


def test_import_on_the_embedded_default_refuses(tmp_path: Path) -> None:
    # a restore into a store that vanishes with the command would report success for nothing
    dump = write_lines(tmp_path / "items.jsonl", [line("a")])
    result = CliRunner().invoke(cli, ["import", str(dump)], env={"AGENT_DATASTORE_URI": None})
    assert result.exit_code == 2
    assert "nowhere to import" in result.stderr
    assert result.stdout == ""


def test_rejects_naming_standard_input_refuses_and_leaves_the_backup(tmp_path: Path) -> None:
    # "import - --rejects F < F" would empty F before reading it
    assert SCRIPT
    backup = write_lines(tmp_path / "backup.jsonl", [line("a"), b"not json"])
    kept = backup.read_bytes()
    with backup.open("rb") as stdin:
        result = subprocess.run(
            [SCRIPT, "--uri", "mongomock://", "import", "-", "--rejects", str(backup)],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "--rejects names the file being imported" in result.stderr
    assert backup.read_bytes() == kept


def test_a_refused_input_leaves_an_old_rejects_file_alone(
    target: DataStore, tmp_path: Path
) -> None:
    compressed = tmp_path / "items.jsonl.bz2"
    compressed.write_bytes(bz2.compress(line("a") + b"\n"))
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text('{"line": 7, "reason": "kept"}\n')
    result = run(target, "import", str(compressed), "--rejects", str(rejects))
    assert result.exit_code == 2
    assert rejects.read_text() == '{"line": 7, "reason": "kept"}\n'


def test_a_line_of_control_characters_is_rejected_not_skipped_as_blank(
    target: DataStore, tmp_path: Path
) -> None:
    # str.strip() takes \x1c-\x1f and \u2028 for spaces; JSON does not
    dump = write_lines(tmp_path / "items.jsonl", [line("a"), b"\x1f", "\u2028".encode(), b"  "])
    result = run(target, "import", str(dump))
    assert result.exit_code == 4
    assert result.stdout == "imported 1 item, rejected 2 lines\n"
    assert [entry.split(":")[2] for entry in result.stderr.splitlines()] == ["2", "3"]
