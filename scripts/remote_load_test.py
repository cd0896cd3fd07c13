"""A bounded load test of the store service on loopback: many concurrent remote clients, a
fixed number of requests each, then a check that no write was lost.

Usage: python scripts/remote_load_test.py [--clients N] [--requests M] [--uri URI] [--json]
       python scripts/remote_load_test.py --hostile [--small] [...]

Starts ``agent-datastore serve`` on 127.0.0.1 in a subprocess, in front of the embedded store
(``mongomock://``) or of ``--uri``, with a secret of its own. Each client is a thread with its
own ``RemoteDataStoreProxy`` and token; clients are spread over users and agents, several on
each (user, agent). Each makes M requests, cycling through: set of a key of its own, get of
one of its keys, increment of its own counter, increment of the counter all clients of its
(user, agent) share, get_many of its keys, list_keys of its keys. Every answer is checked
against what the client wrote before (a wrong answer counts as a failed request).

Then every (user, agent) is read back through the service: each key set must hold the value
written, each counter the number of its increments that succeeded, and nothing else may be
there. Prints clients, requests, errors, duration, throughput, latency percentiles and the
number of writes lost; exits 1 if a write was lost or a request failed, 0 otherwise.

With ``--hostile`` (8 clients x 40 requests unless told otherwise) the well-behaved clients run
once alone, then beside each attack of ``scripts/hostile_clients.py`` alone (large answers,
heavy bodies, half-open connections, a token flood in three spellings), then beside all of them
at once (``--phases`` picks the attacked phases). The attackers run in a process of their own;
the service runs with a per-token rate limit and a short request deadline (3 s; 1 s with
``--small``), past which the half-open connections are held. Each phase's writes are read back
and deleted when it ends. It reports each phase's latency and the service's peak memory
(sampled from /proc, the kernel's peak reset at each phase), what each attacker got, and two
budgets over every attacked phase: the p99 within 3x of the p99 alone, and the peak memory
within ``--max-inflight-bytes`` of its base (the resident size once the attackers' large values
are stored and the well-behaved clients have run alone). The service's limits are passed only
when ``agent-datastore serve --help`` lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent_datastore import DataStoreUnavailable, RemoteDataStoreProxy, issue_token
from agent_datastore._serving import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_INFLIGHT_BYTES

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hostile_clients, beside this file
import hostile_clients

NAMESPACE = "load"
SHARED_COUNTER = "shared"
CLIENTS_PER_AGENT = 4  # clients that share one (user, agent), and so its shared counter
AGENTS_PER_USER = 2
GET_MANY_SIZE = 10
LIST_LIMIT = 50
STARTUP_SECONDS = 30
BATCH = 1000
MIX = "of every 8: 2 set, 1 get, 1 get_many, 1 list_keys, 1 increment own, 2 increment shared"
PHASE_SECONDS = 90.0  # a well-behaved phase sends nothing more after this long
P99_BUDGET = 3.0
# The service's request deadline in a hostile run: short, so that the run sees the half-open
# connections closed (the service's default is 30 s).
FULL_REQUEST_TIMEOUT = 3.0
SMALL_REQUEST_TIMEOUT = 1.0
MiB = hostile_clients.MiB


@dataclass
class Client:
    """One client's plan and record: what it wrote, what succeeded, how long each request
    took, and what went wrong. A write that raised ``DataStoreUnavailable`` (no answer in
    time) may have been applied or not: it is kept apart, as a write that may be found."""

    index: int
    user_id: str
    agent_name: str
    written: dict[str, Any] = field(default_factory=dict)
    own_increments: int = 0
    shared_increments: int = 0
    shared_seen: int = 0
    maybe_written: dict[str, Any] = field(default_factory=dict)
    maybe_own_increments: int = 0
    maybe_shared_increments: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"c{self.index}-"

    @property
    def counter(self) -> str:
        return f"c{self.index}-count"


@dataclass
class Report:
    clients: int
    requests: int
    errors: int
    duration_s: float
    throughput_rps: float
    latency_ms: dict[str, float]
    writes_checked: int
    writes_lost: int
    unexpected_keys: int
    uri: str
    error_samples: list[str]
    hostile: dict[str, Any] | None = None
    # writes that timed out: applied or not, neither is a lost or an unexpected write
    writes_uncertain: int = 0

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.writes_lost == 0 and self.unexpected_keys == 0

    def budgets_hold(self) -> bool | None:
        """Whether the hostile run's budgets hold (None without ``--hostile``)."""
        if self.hostile is None:
            return None
        return all(check["holds"] for check in self.hostile["budgets"])

    def text(self) -> str:
        latency = self.latency_ms
        # with --hostile, every client runs twice: without the attackers, then with them
        runs = self.clients * (1 if self.hostile is None else len(self.hostile["phases"]))
        lines = [
            f"clients: {self.clients} (threads; up to {CLIENTS_PER_AGENT} share a user and agent)",
            f"requests: {self.requests} ({self.requests // runs} per client and phase; {MIX})"
            if self.hostile
            else f"requests: {self.requests} ({self.requests // self.clients} per client; {MIX})",
            f"store: {self.uri}; service and clients on 127.0.0.1, {os.cpu_count()} cores",
            f"errors: {self.errors}",
            f"duration: {self.duration_s:.2f} s",
            f"throughput: {self.throughput_rps:.0f} requests/s",
            f"latency: p50 {latency['p50']:.1f} ms, p90 {latency['p90']:.1f} ms, "
            f"p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms",
            f"writes checked: {self.writes_checked}",
            f"writes lost: {self.writes_lost}",
        ]
        if self.writes_uncertain:
            lines.append(
                f"writes that timed out (may or may not be applied): {self.writes_uncertain}"
            )
        if self.unexpected_keys:
            lines.append(f"unexpected keys or increments: {self.unexpected_keys}")
        lines.extend(f"  error: {sample}" for sample in self.error_samples)
        if self.hostile is not None:
            lines.extend(hostile_clients.report_lines(self.hostile))
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_options() -> set[str]:
    """The options that ``agent-datastore serve --help`` lists: this script passes the
    service's newer ones only where they exist."""
    command = [sys.executable, "-m", "agent_datastore.cli", "serve", "--help"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    return {word.rstrip(",") for word in shown.split() if word.startswith("--")}


@dataclass(frozen=True)
class Service:
    url: str
    pid: int


@contextmanager
def running_service(uri: str, secret: str, options: Sequence[str] = ()) -> Iterator[Service]:
    """``agent-datastore serve`` on a free port of 127.0.0.1, with ``options``, until the
    block ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "agent_datastore.cli", "serve", "--port", str(port)]
    command += options
    environment = {**os.environ, "AGENT_DATASTORE_SECRET": secret}
    if uri == "mongomock://":
        command.append("--embedded")
        environment.pop("AGENT_DATASTORE_URI", None)
    else:
        # not on the command line, where other local users could read its password
        environment["AGENT_DATASTORE_URI"] = uri
    # uvicorn logs every request: to a file, so that a full pipe can never stall the service
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=log)
        try:
            _wait_until_serving(process, url, log)
            yield Service(url, process.pid)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Any) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the service exited with {process.returncode}:\n{log.read()}")
        try:
            if httpx.get(f"{url}/v1/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the service did not answer within {STARTUP_SECONDS} s")


def _plan(clients: int, run: str) -> list[Client]:
    plan = []
    for index in range(clients):
        group = index // CLIENTS_PER_AGENT
        user = f"load-{run}-user-{group // AGENTS_PER_USER}"
        # agent names repeat across users: two users' agent-0 must never see each other's keys
        agent = f"agent-{group % AGENTS_PER_USER}"
        plan.append(Client(index, user, agent))
    return plan


def _step(client: Client, proxy: RemoteDataStoreProxy, step: int) -> str | None:
    """Request ``step`` of ``client``; what was wrong with the answer, if anything."""
    own = sorted(client.written)
    kind = step % 8
    if kind in (0, 4):
        key = f"{client.prefix}k{step:06d}"
        value = {"client": client.index, "step": step, "text": "é" * (step % 7)}
        try:
            proxy.set(key, value)
        except DataStoreUnavailable:
            client.maybe_written[key] = value
            raise
        client.written[key] = value
    elif kind == 1:
        key = own[step % len(own)] if own else f"{client.prefix}missing"
        read = proxy.get(key)
        if read != client.written.get(key):
            return f"get {key!r} read {read!r}, not {client.written.get(key)!r}"
    elif kind == 2:
        try:
            count = proxy.increment(client.counter)
        except DataStoreUnavailable:
            client.maybe_own_increments += 1
            raise
        client.own_increments += 1
        least = client.own_increments
        if not least <= count <= least + client.maybe_own_increments:
            return f"increment {client.counter!r} returned {count}, not {client.own_increments}"
    elif kind in (3, 6):
        try:
            count = proxy.increment(SHARED_COUNTER)
        except DataStoreUnavailable:
            client.maybe_shared_increments += 1
            raise
        client.shared_increments += 1
        # others add to it too, but it never goes back
        if count <= client.shared_seen:
            return f"the shared counter went from {client.shared_seen} back to {count}"
        client.shared_seen = count
    elif kind == 5:
        keys = [*own[-GET_MANY_SIZE:], f"{client.prefix}missing"]
        read = proxy.get_many(keys)
        wanted = {key: client.written[key] for key in own[-GET_MANY_SIZE:]}
        if read != wanted:
            return f"get_many read {read!r}, not {wanted!r}"
    else:
        listed = proxy.list_keys(client.prefix + "k", limit=LIST_LIMIT)
        known = [key for key in listed if key not in client.maybe_written]
        # a short page is every key: then each one written must be there
        if known != (own if len(listed) < LIST_LIMIT else own[: len(known)]):
            return f"list_keys listed {len(listed)} keys, not the {len(own[:LIST_LIMIT])} written"
    return None


def _run_client(
    client: Client,
    url: str,
    secret: str,
    requests: int,
    start: threading.Barrier,
    seconds: float,
) -> None:
    try:
        token = issue_token(secret, client.user_id, client.agent_name)
        proxy = RemoteDataStoreProxy(url, token, NAMESPACE)
    except Exception as exc:
        client.errors.append(f"client {client.index} setup: {type(exc).__name__}: {exc}")
        start.abort()  # no client waits forever for one that will never come
        return
    with proxy:
        try:
            start.wait()
        except threading.BrokenBarrierError:
            return
        deadline = time.monotonic() + seconds
        for step in range(requests):
            if time.monotonic() > deadline:
                client.errors.append(
                    f"client {client.index} step {step}: not sent: "
                    f"{requests - step} requests left after {seconds:.0f} s"
                )
                break
            began = time.perf_counter()
            try:
                wrong = _step(client, proxy, step)
            except Exception as exc:
                wrong = f"{type(exc).__name__}: {exc}"
            client.latencies.append(time.perf_counter() - began)
            if wrong:
                client.errors.append(f"client {client.index} step {step}: {wrong}")


def _groups(plan: list[Client]) -> dict[tuple[str, str], list[Client]]:
    groups: dict[tuple[str, str], list[Client]] = {}
    for client in plan:
        groups.setdefault((client.user_id, client.agent_name), []).append(client)
    return groups


def _verify(url: str, secret: str, plan: list[Client]) -> tuple[int, int, int]:
    """Writes that succeeded, those of them whose effect is missing, and keys or namespaces
    that no client wrote, read back through the service for each (user, agent)."""
    checked = lost = unexpected = 0
    for (user_id, agent_name), members in _groups(plan).items():
        values: dict[str, Any] = {}
        maybe_values: dict[str, Any] = {}
        counts = {SHARED_COUNTER: sum(client.shared_increments for client in members)}
        maybe = {SHARED_COUNTER: sum(client.maybe_shared_increments for client in members)}
        for client in members:
            values.update(client.written)
            maybe_values.update(client.maybe_written)
            counts[client.counter] = client.own_increments
            maybe[client.counter] = client.maybe_own_increments
        counters = {key for key in counts if counts[key] or maybe[key]}  # never made otherwise
        counts = {key: count for key, count in counts.items() if count}
        token = issue_token(secret, user_id, agent_name)
        with RemoteDataStoreProxy(url, token, NAMESPACE) as proxy:
            keys = [*values, *counts]
            found: dict[str, Any] = {}
            for first in range(0, len(keys), BATCH):  # the service's limit on one batch
                found.update(proxy.get_many(keys[first : first + BATCH]))
            listed = set(proxy.list_keys())
            namespaces = set(proxy.list_namespaces())
        checked += len(values) + sum(counts.values())
        lost += sum(1 for key, value in values.items() if found.get(key) != value)
        for key, count in counts.items():
            # an increment too many is no lost write, but no client asked for it either
            lost += max(0, count - found.get(key, 0))
            unexpected += max(0, found.get(key, 0) - count - maybe[key])
        unexpected += len(listed - set(values) - set(maybe_values) - counters)
        unexpected += len(namespaces - {NAMESPACE})
    return checked, lost, unexpected


def _clear(url: str, secret: str, plan: list[Client]) -> None:
    """Delete what the run wrote, which a real database would keep."""
    for user_id, agent_name in _groups(plan):
        token = issue_token(secret, user_id, agent_name)
        with RemoteDataStoreProxy(url, token, NAMESPACE) as proxy:
            proxy.clear()


def _percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted ``ordered``, in milliseconds."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1] * 1000


# ------------------------------------------------------------------------------ hostile

ATTACKER = ("attacker", "agent-x")


# The phases of a hostile run after the first (the well-behaved clients alone): each attack
# alone beside them, then every attack at once.
TOGETHER = "with_attackers"
ATTACKED_PHASES = (*hostile_clients.ATTACKS, TOGETHER)


def _phase(plan: list[Client], seconds: float, start_rss: int, peak: int) -> dict[str, Any]:
    return {
        "requests": sum(len(client.latencies) for client in plan),
        "errors": sum(len(client.errors) for client in plan),
        "seconds": round(seconds, 3),
        "latency_ms": _latency_ms(plan),
        "memory": {"start_rss_bytes": start_rss, "peak_bytes": peak},
    }


def _attack(
    url: str,
    secret: str,
    settings: hostile_clients.HostileSettings,
    attacks: tuple[str, ...],
    run: Any,
) -> dict[str, Any]:
    """The attackers of ``attacks`` at work, in a process of their own, while ``run()`` runs;
    what each got. The phase lasts until the half-open connections have been held past the
    service's deadline."""
    hold = settings.half_open_hold_seconds
    attack = hostile_clients.AttackProcess(url, secret, ATTACKER, settings.sizes, attacks, hold)
    attack.start()
    try:
        # for the attackers to be at work before the well-behaved clients start
        time.sleep(settings.sizes.settle_seconds)
        run()
    finally:
        reports = attack.stop(hostile_clients.STOP_SECONDS + hold + STARTUP_SECONDS)
    return reports


def _hostile_run(
    service: Service,
    secret: str,
    plans: dict[str, list[Client]],
    requests: int,
    settings: hostile_clients.HostileSettings,
    options: list[str],
) -> tuple[float, dict[str, Any], tuple[int, int, int]]:
    """The well-behaved clients of ``plans["without_attackers"]`` alone, then those of each
    other phase beside its attackers; the seconds the well-behaved clients took, what the run
    found, and what ``_verify`` found.

    Each phase's writes are read back and deleted as soon as it ends, so that every phase
    starts from the same store: the embedded store scans every document on each query, and
    would otherwise be slower in each phase than in the last."""
    url = service.url
    phases: dict[str, dict[str, Any]] = {}
    verified = [0, 0, 0]

    def read_back(plan: list[Client]) -> None:
        for index, count in enumerate(_verify(url, secret, plan)):
            verified[index] += count
        _clear(url, secret, plan)

    with hostile_clients.MemorySampler(service.pid) as memory:
        at_rest = memory.read()["VmRSS"]
        hostile_clients.write_large_values(
            url, lambda: issue_token(secret, *ATTACKER), settings.sizes
        )
        start_rss = memory.reset_peak()
        quiet = plans["without_attackers"]
        phases["without_attackers"] = _phase(
            quiet, _run_phase(url, secret, quiet, requests), start_rss, memory.peak()
        )
        base = memory.read()["VmRSS"]
        read_back(quiet)
        for name, plan in plans.items():
            if name == "without_attackers":
                continue
            attacks = hostile_clients.ATTACKS if name == TOGETHER else (name,)
            # on stderr, so that a profiler of the service can tell the phases apart
            print(f"hostile: phase {name} begins", file=sys.stderr, flush=True)
            start_rss = memory.reset_peak()
            durations: list[float] = []

            def well_behaved(plan: list[Client] = plan, durations: list[float] = durations) -> None:
                durations.append(_run_phase(url, secret, plan, requests))

            attackers = _attack(url, secret, settings, attacks, well_behaved)
            phases[name] = {
                **_phase(plan, sum(durations), start_rss, memory.peak()),
                "attackers": attackers,
            }
            print(f"hostile: phase {name} ends", file=sys.stderr, flush=True)
            read_back(plan)
        samples = memory.samples
    with RemoteDataStoreProxy(url, issue_token(secret, *ATTACKER), "attack", timeout=120) as spy:
        spy.clear()  # the large values, which a real database would keep
    quiet_p99 = phases["without_attackers"]["latency_ms"]["p99"]
    attacked = {name: phase for name, phase in phases.items() if name != "without_attackers"}
    for phase in attacked.values():
        phase["p99_ratio"] = round(phase["latency_ms"]["p99"] / max(quiet_p99, 0.001), 2)
    worst_latency = max(attacked, key=lambda name: attacked[name]["p99_ratio"])
    worst_memory = max(phases, key=lambda name: phases[name]["memory"]["peak_bytes"])
    peak = phases[worst_memory]["memory"]["peak_bytes"]
    growth = peak - base
    passed = [
        name
        for name in (*hostile_clients.LIMIT_OPTIONS, hostile_clients.CONNECTION_OPTION)
        if name in options
    ]
    p99_ratio = attacked[worst_latency]["p99_ratio"]
    findings = {
        "service_options": options,
        # the allocator's settings change what the service keeps resident after a request
        "service_environment": {
            name: value for name, value in sorted(os.environ.items()) if name.startswith("MALLOC_")
        },
        # none of the service's availability limits exist yet on this service
        "before_availability_limits": not passed,
        "attack_sizes": asdict(settings.sizes),
        "phases": phases,
        "memory": {
            "at_rest_rss_bytes": at_rest,
            "base_rss_bytes": base,
            "peak_bytes": peak,
            "growth_bytes": growth,
            "peak_phase": worst_memory,
            "kernel_peak": memory.kernel_peak,
            "samples": samples,
        },
        # every attacker, as it fared when all of them ran at once
        "attackers": phases[TOGETHER]["attackers"] if TOGETHER in phases else {},
        "budgets": [
            {
                "budget": f"well-behaved p99 with attackers <= {P99_BUDGET:g}x without "
                f"(the worst phase: {worst_latency})",
                "measured": p99_ratio,
                "holds": p99_ratio <= P99_BUDGET,
            },
            {
                "budget": "service peak memory <= base + max_inflight_bytes "
                f"({settings.max_inflight_bytes // MiB} MiB), in MiB over the base "
                f"(the worst phase: {worst_memory})",
                "measured": round(growth / MiB, 1),
                "holds": growth <= settings.max_inflight_bytes,
            },
        ],
    }
    seconds = sum(phase["seconds"] for phase in phases.values())
    checked, lost, unexpected = verified
    return seconds, findings, (checked, lost, unexpected)


def _run_phase(url: str, secret: str, plan: list[Client], requests: int) -> float:
    """Every client of ``plan`` making ``requests`` requests at once; the seconds it took."""
    # every client has its token and proxy before any sends its first request
    start = threading.Barrier(len(plan) + 1)
    threads = [
        threading.Thread(
            target=_run_client, args=(client, url, secret, requests, start, PHASE_SECONDS)
        )
        for client in plan
    ]
    for thread in threads:
        thread.start()
    with suppress(threading.BrokenBarrierError):  # a client failed to start: it says why
        start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def _latency_ms(plan: list[Client]) -> dict[str, float]:
    latencies = sorted(latency for client in plan for latency in client.latencies)
    return {
        name: round(_percentile(latencies, fraction), 2)
        for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    }


def run(
    clients: int,
    requests: int,
    uri: str = "mongomock://",
    hostile: hostile_clients.HostileSettings | None = None,
    phases: Sequence[str] = ATTACKED_PHASES,
) -> Report:
    secret = secrets.token_urlsafe(32)
    run_id = secrets.token_hex(4)
    findings = None
    options = [] if hostile is None else hostile.service_options(serve_options())
    # with --hostile, each phase has clients of its own: the read-back checks every phase
    names = ["without_attackers", *(phases if hostile is not None else ())]
    plans = {name: _plan(clients, f"{run_id}-{index}") for index, name in enumerate(names)}
    everyone = [client for plan in plans.values() for client in plan]
    with running_service(uri, secret, options) as service:
        url = service.url
        if hostile is None:
            duration = _run_phase(url, secret, everyone, requests)
            checked, lost, unexpected = _verify(url, secret, everyone)
            _clear(url, secret, everyone)
        else:
            duration, findings, verified = _hostile_run(
                service, secret, plans, requests, hostile, options
            )
            checked, lost, unexpected = verified
    latencies = [latency for client in everyone for latency in client.latencies]
    errors = [error for client in everyone for error in client.errors]
    kinds = Counter(error.split(": ", 1)[1].split(":")[0] for error in errors)
    total = len(latencies)
    return Report(
        clients=clients,
        requests=total,
        errors=len(errors),
        duration_s=round(duration, 3),
        throughput_rps=round(total / duration, 1) if duration else 0.0,
        latency_ms=_latency_ms(everyone),
        writes_checked=checked,
        writes_lost=lost,
        unexpected_keys=unexpected,
        # a database URI can hold a password
        uri="mongomock:// (embedded)" if uri.startswith("mongomock") else "--uri",
        error_samples=[f"{count} x {kind}" for kind, count in kinds.most_common(5)],
        hostile=findings,
        writes_uncertain=sum(
            len(client.maybe_written) + client.maybe_own_increments + client.maybe_shared_increments
            for client in everyone
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, help="concurrent clients (16; 8 if --hostile)")
    parser.add_argument("--requests", type=int, help="requests per client (100; 40 if --hostile)")
    parser.add_argument(
        "--uri", default="mongomock://", help="the database behind the service (embedded)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    hostile = parser.add_argument_group("hostile tenants")
    hostile.add_argument(
        "--hostile", action="store_true", help="phases under attack, each attack alone then all"
    )
    hostile.add_argument("--small", action="store_true", help="small attacks (for the tests)")
    hostile.add_argument(
        "--rate-limit",
        help="the service's per-token limit (default: 2 x --requests per 60 s)",
    )
    # the service's own defaults: the run measures the service as it ships
    hostile.add_argument(
        "--max-answer-bytes", type=int, default=DEFAULT_MAX_ANSWER_BYTES, help="(32 MiB)"
    )
    hostile.add_argument(
        "--max-inflight-bytes", type=int, default=DEFAULT_MAX_INFLIGHT_BYTES, help="(256 MiB)"
    )
    hostile.add_argument(
        "--request-timeout",
        type=float,
        help="the service's request deadline, which the half-open connections are held past "
        f"(default {FULL_REQUEST_TIMEOUT:g} s; {SMALL_REQUEST_TIMEOUT:g} s with --small)",
    )
    hostile.add_argument("--max-connections", type=int, default=1000)
    hostile.add_argument(
        "--phases",
        default=",".join(ATTACKED_PHASES),
        help="the attacked phases to run, after the well-behaved clients alone: "
        f"any of {', '.join(ATTACKED_PHASES)} (default: all, in that order)",
    )
    arguments = parser.parse_args(argv)
    phases = tuple(name for name in arguments.phases.split(",") if name)
    unknown = sorted(set(phases) - set(ATTACKED_PHASES))
    if unknown or not phases:
        parser.error(f"--phases takes names among {', '.join(ATTACKED_PHASES)}")
    clients = arguments.clients or (8 if arguments.hostile else 16)
    requests = arguments.requests or (40 if arguments.hostile else 100)
    if clients < 1 or requests < 1:
        parser.error("--clients and --requests must be at least 1")
    settings = None
    if arguments.hostile:
        settings = hostile_clients.HostileSettings(
            sizes=hostile_clients.SMALL if arguments.small else hostile_clients.FULL,
            # no well-behaved client can reach it (each has a token of its own), and every
            # flood goes far past it
            rate_limit=arguments.rate_limit or f"{2 * requests}/60",
            max_answer_bytes=arguments.max_answer_bytes,
            max_inflight_bytes=arguments.max_inflight_bytes,
            request_timeout=arguments.request_timeout
            or (SMALL_REQUEST_TIMEOUT if arguments.small else FULL_REQUEST_TIMEOUT),
            max_connections=arguments.max_connections,
        )
    report = run(clients, requests, arguments.uri, settings, phases)
    if arguments.json:
        document = {**asdict(report), "ok": report.ok}
        if settings is not None:
            document["budgets_hold"] = report.budgets_hold()
        print(json.dumps(document, indent=2))
    else:
        print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
