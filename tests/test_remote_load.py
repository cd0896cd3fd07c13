"""The bounded load test of the store service (scripts/remote_load_test.py), at a tiny size:
it starts the service, stops by itself, fails no request and loses no write. Its timings are
reported, not asserted: they depend on the machine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "remote_load_test.py"


def _script() -> ModuleType:
    name = "remote_load_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # its dataclasses look their module up while they are made
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def test_a_small_load_loses_no_write(capsys: pytest.CaptureFixture[str]) -> None:
    status = _script().main(["--clients", "4", "--requests", "16", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["error_samples"] == []
    assert report["errors"] == 0
    assert report["writes_lost"] == 0
    assert report["unexpected_keys"] == 0
    assert report["requests"] == 4 * 16
    # 2 sets, 1 increment of its own counter and 2 of the shared one in every 8 requests
    assert report["writes_checked"] == 4 * 16 * 5 // 8
    assert report["ok"] is True
    assert status == 0


def test_the_report_says_what_the_docs_quote(capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main(["--clients", "2", "--requests", "8"]) == 0
    text = capsys.readouterr().out
    for line in (
        "clients:",
        "requests:",
        "errors: 0",
        "throughput:",
        "p99",
        "writes lost: 0",
    ):
        assert line in text


def test_a_lost_write_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    step = script._step

    def forgetful(client: Any, proxy: Any, index: int) -> str | None:
        if client.index == 0 and index == 0:
            client.written["c0-never-sent"] = "lost"  # recorded as written, never sent
            return None
        return step(client, proxy, index)  # type: ignore[no-any-return]

    monkeypatch.setattr(script, "_step", forgetful)
    assert script.main(["--clients", "2", "--requests", "8", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["writes_lost"] == 1
    assert report["ok"] is False


ATTACKERS_BY_PHASE = {
    "large_answers": {"large_answers"},
    "heavy_bodies": {"heavy_bodies"},
    "half_open": {"half_open"},
    "token_respellings": {"as_issued", "trailing_equals", "junk_character"},
}


def test_a_small_hostile_run_reports_every_attacker_and_loses_no_write(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = _script().main(
        ["--hostile", "--small", "--clients", "4", "--requests", "16", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    # every phase's writes were read back: none lost, nothing unexpected
    phases = ["without_attackers", *ATTACKERS_BY_PHASE, "with_attackers"]
    assert report["writes_lost"] == 0
    assert report["unexpected_keys"] == 0
    assert report["writes_checked"] == len(phases) * 4 * 16 * 5 // 8
    assert status == (0 if report["ok"] else 1)
    hostile = report["hostile"]
    # the well-behaved clients alone, beside each attack alone, then beside all of them
    assert list(hostile["phases"]) == phases
    for name, phase in hostile["phases"].items():
        assert set(phase["latency_ms"]) == {"p50", "p90", "p99", "max"}
        assert phase["requests"] == 4 * 16
        assert 0 < phase["memory"]["start_rss_bytes"] <= phase["memory"]["peak_bytes"], name
        attackers = ATTACKERS_BY_PHASE.get(name, set())
        if name == "with_attackers":
            attackers = set().union(*ATTACKERS_BY_PHASE.values())
        assert set(phase.get("attackers", {})) == attackers, name
        for attacker, got in phase.get("attackers", {}).items():
            assert sum(got["outcomes"].values()) > 0, (name, attacker)
        if attackers:
            assert phase["p99_ratio"] > 0
    assert "--rate-limit" in hostile["service_options"]
    # a short deadline, so that the run sees the half-open connections closed by the service
    # (each is held 3 s after the last one opened, the deadline is 1 s)
    timeout = hostile["service_options"].index("--request-timeout")
    assert hostile["service_options"][timeout + 1] == "1.0"
    for name in ("half_open", "with_attackers"):
        half_open = hostile["phases"][name]["attackers"]["half_open"]
        assert half_open["opened"] == 40
        assert half_open["closed_by_server"] == 40, half_open["outcomes"]
    memory = hostile["memory"]
    assert 0 < memory["at_rest_rss_bytes"] <= memory["base_rss_bytes"] <= memory["peak_bytes"]
    assert memory["peak_phase"] in phases
    assert set(hostile["attackers"]) == set().union(*ATTACKERS_BY_PHASE.values())
    # a junk character in the signature is never accepted, nor a trailing "="
    for name in ("token_respellings", "with_attackers"):
        attackers = hostile["phases"][name]["attackers"]
        assert set(attackers["junk_character"]["outcomes"]) <= {"401", "429"}
        assert set(attackers["trailing_equals"]["outcomes"]) <= {"401", "429"}
    assert [check["budget"][:13] for check in hostile["budgets"]] == [
        "well-behaved ",
        "service peak ",
    ]
    assert report["budgets_hold"] == all(check["holds"] for check in hostile["budgets"])


def test_a_hostile_run_of_one_attack_runs_only_that_phase(
    capsys: pytest.CaptureFixture[str],
) -> None:
    arguments = ["--hostile", "--small", "--clients", "2", "--requests", "8", "--json"]
    status = _script().main([*arguments, "--phases", "token_respellings"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert list(report["hostile"]["phases"]) == ["without_attackers", "token_respellings"]
    assert report["writes_checked"] == 2 * 2 * 8 * 5 // 8
