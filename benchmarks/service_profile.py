"""Where a request's time goes in the store service and in the bare endpoint
(``benchmarks.service``): py-spy samples each server while it serves ``get`` and ``set``, and
every sample is put in one component, by the frames on its stack.

A sample under ``verify_token`` (or in PyJWT) is token verification, and one under uvicorn's
access log is the log, whatever they were doing (PyJWT parses JSON too). Any other sample
belongs to its innermost frame that a component of ``COMPONENTS`` names: a sample in
``json/decoder.py`` called from Starlette, called from the service, is JSON. Samples of the
event loop waiting for the network and of idle threads are left out, so the shares are of the
time the server was working; a component's microseconds per request are its share of the CPU
time per request measured from ``/proc``. py-spy samples wall-clock time: a thread that the
kernel preempted (to run the process its socket write woke, on this 2-core machine) counts
where it stopped, mostly in socket writes.

``micro_timings`` measures, in this process, the pieces that the proposals would change: a
token's verification against a look-up in a cache of verified tokens, the body's parse and
the answer's encoding.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_datastore import _protocol, _serving, _tokens
from agent_datastore._tokens import verify_token

SAMPLES_PER_SECOND = 500
ATTACH_SECONDS = 20

# (component, what a frame's text contains); a frame reads "function (path/file.py:line)".
# A sample with any frame of an enclosing component is that component's.
ENCLOSING: list[tuple[str, tuple[str, ...]]] = [
    ("token verification (PyJWT, HMAC, base64)", ("verify_token (", "jwt/")),
    ("uvicorn access log (logging)", ("logging/",)),
]
# Otherwise, the component of the sample's innermost frame that one names (the first of
# them, for a frame that several name).
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("JSON: parse the request body", ("json/decoder.py", "loads (json/")),
    ("JSON: encode the answer", ("json/encoder.py", "dumps (json/")),
    ("pymongo driver and BSON", ("pymongo/", "bson/")),
    (
        "service: request checks, dispatch, answer (server.py, _serving, _protocol)",
        ("server.py", "_serving.py", "_protocol.py", "_metrics.py"),
    ),
    ("store layer (checks, codec, command)", ("agent_datastore/",)),
    ("bare handler (builds the command)", ("benchmarks/",)),
    ("Starlette (routing, Request, Response)", ("starlette/",)),
    ("anyio (thread pool, streams)", ("anyio/",)),
    ("uvicorn and h11 (HTTP parsing and writing)", ("uvicorn/", "h11/")),
    ("asyncio event loop and sockets", ("asyncio/", "selectors.py", "socket.py")),
]
OTHER = "other"
# A sample whose innermost frame is one of these is a wait, not work: the event loop waiting
# for the network, an idle worker of a thread pool (py-spy takes them for running at times).
IDLE = ("EpollSelector.select (", "_worker (concurrent/futures/thread.py")


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def component_of(stack: str) -> str:
    """The component of a sample, from its stack (outermost frame first, ``;`` between)."""
    frames = stack.split(";")
    for name, markers in ENCLOSING:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    for frame in reversed(frames):
        for name, markers in COMPONENTS:
            if any(marker in frame for marker in markers):
                return name
    return OTHER


def read_samples(path: Path) -> Counter[str]:
    """Samples per component, from py-spy's raw output (a stack and a count per line)."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack.rpartition(";")[2].startswith(IDLE):
            continue
        if stack and count.isdigit():
            counts[component_of(stack)] += int(count)
    return counts


def _record(spy: str, pid: int, output: Path, load: Callable[[], dict[str, Any]]) -> Any:
    """py-spy recording ``pid`` while ``load`` runs; what ``load`` returned."""
    recorder = subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "--rate", str(SAMPLES_PER_SECOND)),
            *("--format", "raw", "--output", str(output)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert recorder.stdout is not None
    deadline = time.monotonic() + ATTACH_SECONDS
    # it says so once it samples; anything else first is an error (no permission to attach)
    first = recorder.stdout.readline()
    if "Sampling" not in first or time.monotonic() > deadline:
        recorder.kill()
        recorder.wait()
        raise RuntimeError(f"py-spy did not attach: {first.strip()}")
    try:
        return load()
    finally:
        recorder.send_signal(signal.SIGINT)  # it writes what it sampled and stops
        try:
            recorder.communicate(timeout=ATTACH_SECONDS)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()


def profile(
    pids: dict[str, int], load: Callable[[str], dict[str, Any]], keep: Path | None = None
) -> dict[str, Any]:
    """Each server sampled by py-spy while ``load(kind)`` loads it (one server at a time):
    per server, the load's record and the share of samples in each component. Skipped, with
    the reason, when py-spy is missing or may not attach. With ``keep``, py-spy's stacks are
    written there too (``<kind>.txt``, for a flame graph)."""
    spy = _py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)", "load": {}}
    result: dict[str, Any] = {"tool": f"py-spy, {SAMPLES_PER_SECOND} samples/s", "load": {}}
    with tempfile.TemporaryDirectory() as folder:
        for kind, pid in pids.items():
            output = Path(folder) / f"{kind}.txt"
            try:
                result["load"][kind] = _record(spy, pid, output, lambda kind=kind: load(kind))
            except RuntimeError as exc:
                return {"skipped": str(exc), "load": result["load"]}
            counts = read_samples(output) if output.exists() else Counter()
            if keep is not None and output.exists():
                shutil.copy(output, keep / output.name)
            total = sum(counts.values())
            cpu = result["load"][kind]["server_cpu_us_per_request"]
            result[kind] = {
                "samples": total,
                "components": [
                    {
                        "component": name,
                        "share": round(count / total, 4),
                        "us_per_request": round(count / total * cpu, 1),
                    }
                    for name, count in counts.most_common()
                ],
            }
    return result


# ----------------------------------------------------------------------- micro-timings


def _per_call_us(call: Callable[[], Any], number: int) -> float:
    """The best of five means of ``number`` calls, in microseconds."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - began) / number * 1e6)
    return round(best, 2)


def micro_timings(
    secret: str, token: str, set_body: bytes, value: Any, quick: bool
) -> dict[str, float]:
    """What the pieces of a request that the proposals touch cost, one call at a time."""
    number = 20 if quick else 2000
    key = secret.encode()
    # a verified token's scope kept under its text, with its expiry checked on every hit:
    # what a cache of verified tokens would do instead of verifying
    cache = {token: verify_token(key, token)}

    def cached() -> Any:
        scope = cache.get(token)
        if scope is None or scope.expires_at <= time.time():
            return verify_token(key, token)
        return scope

    answer = {"result": {"found": True, "value": value}}
    timings = {
        "verify_token_us": _per_call_us(lambda: verify_token(key, token), number),
        "cached_token_us": _per_call_us(cached, number),
        "parse_set_body_us": _per_call_us(lambda: _serving.ParsedBody(set_body).parse(), number),
        "dumps_get_answer_us": _per_call_us(lambda: _protocol.dumps(answer), number),
        "json_dumps_default_us": _per_call_us(lambda: json.dumps(answer).encode(), number),
    }
    # where verify_token keeps verified tokens in a cache of its own, the call above mostly
    # hits it: what a miss costs is the undecorated check
    uncached = getattr(getattr(_tokens, "_verified", None), "__wrapped__", None)
    if uncached is not None:
        timings["verify_token_uncached_us"] = _per_call_us(
            lambda: uncached(key, None, token), number
        )
    return timings


def text(report: dict[str, Any], micro: dict[str, float]) -> list[str]:
    """The breakdown as Markdown lines."""
    if "skipped" in report:
        lines = [f"profile skipped: {report['skipped']}"]
    else:
        lines = [f"Where the CPU time of a request goes ({report['tool']}; get and set):", ""]
        bare = {row["component"]: row for row in report["bare"]["components"]}
        lines += [
            "| Component | Service share | Service µs/req | Bare µs/req | Added µs/req |",
            "|---|---|---|---|---|",
        ]
        for row in report["service"]["components"]:
            theirs = bare.get(row["component"], {}).get("us_per_request", 0.0)
            lines.append(
                f"| {row['component']} | {row['share']:.1%} | {row['us_per_request']:.0f} "
                f"| {theirs:.0f} | {row['us_per_request'] - theirs:+.0f} |"
            )
        for kind in ("service", "bare"):
            load = report["load"][kind]
            lines.append(
                f"{kind}: {load['requests']} requests profiled, "
                f"{load['server_cpu_us_per_request']:.0f} µs CPU each, "
                f"{report[kind]['samples']} samples"
            )
    lines += ["", "In this process, per call: " + ", ".join(f"{k} {v}" for k, v in micro.items())]
    return lines
