"""The benchmark still runs: its quick mode, at tiny sizes, writes every result. Nothing here
looks at a timing (those belong to the benchmark itself, on a quiet machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _committed_results() -> dict[str, bytes]:
    folder = ROOT / "benchmarks" / "results"
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_the_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    committed = _committed_results()
    # no --out: a quick run writes to a new temporary folder (under TMPDIR) and says which
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert finished.returncode == 0, finished.stderr
    assert _committed_results() == committed
    (out,) = tmp_path.iterdir()
    assert f"writing to {out}\n" in finished.stderr
    results = json.loads((out / "results.json").read_text())
    operations = {row["operation"] for row in results["layer"]}
    assert {"get", "set", "delete", "get_many", "set_many", "increment", "get_item"} <= operations
    assert {row["operation"] for row in results["client_path"]} == {
        "get",
        "set",
        "get_many (100)",
        "set_many (100)",
    }
    assert {row["target"] for row in results["scaling"]["listing"]} == {"stub", "wire"}
    assert all(row["peak_bytes"] > 0 for row in results["scaling"]["listing"])
    assert results["embedded"]
    assert all(set(check) == {"budget", "measured", "holds"} for check in results["budgets"])
    report = (out / "results.md").read_text()
    assert "## Budgets" in report
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_results_come_from_the_documented_command() -> None:
    results = json.loads((ROOT / "benchmarks" / "results" / "results.json").read_text())
    assert results["command"] == "python -m benchmarks.run"
    assert (ROOT / "benchmarks" / "results" / "scaling.png").exists()
    page = (ROOT / "docs" / "performance.md").read_text()
    assert "python -m benchmarks.run" in page


def test_the_performance_page_shows_the_committed_budgets() -> None:
    report = (ROOT / "benchmarks" / "results" / "results.md").read_text()
    page = (ROOT / "docs" / "performance.md").read_text()
    budget_rows = [line for line in report.splitlines() if line.startswith("| ") and "<=" in line]
    assert len(budget_rows) > 30
    for line in budget_rows:
        assert line in page, line


def test_the_service_benchmark_runs_and_both_servers_answer_every_request(
    tmp_path: Path,
) -> None:
    output = tmp_path / "service.json"
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks.service", "--quick", "--json", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert json.loads(output.read_text()) == report
    assert report["command"] == "python -m benchmarks.service --quick"
    assert report["warm_up_answered"] is True
    # both servers sent the responder the very same find and update
    assert report["same_command"] == {"get": True, "set": True}
    sizes = report["sizes"]
    assert {(row["operation"], row["concurrency"]) for row in report["rows"]} == {
        ("get", sizes["concurrency"]),
        ("set", sizes["concurrency"]),
        ("get", 1),
        ("set", 1),
    }
    for row in report["rows"]:
        requests = sizes["requests"] if row["concurrency"] > 1 else sizes["single"]
        for kind in ("service", "bare"):
            side = row[kind]
            assert side["requests"] == requests * sizes["rounds"]
            assert side["wrong"] == 0
            assert set(side["latency_ms"]) == {"p50", "p99"}
            assert side["rps"] > 0
        assert row["ratio_rps"] > 0
    assert [check["budget"].split(" for ")[1][:3] for check in report["budgets"]] == [
        "get",
        "set",
    ]
    assert all(set(check) == {"budget", "measured", "holds"} for check in report["budgets"])
    profile = report["profile"]
    for kind, load in profile["load"].items():
        assert load["wrong"] == 0, kind
        assert load["requests"] == 2 * sizes["profile_requests"]
    if "skipped" not in profile:  # py-spy installed and allowed to attach
        for kind in ("service", "bare"):
            shares = [row["share"] for row in profile[kind]["components"]]
            assert shares
            assert abs(sum(shares) - 1) < 0.01
    assert report["micro"]["verify_token_us"] > 0
