"""The store service's throughput and latency, against a bare endpoint doing the same work.

    python -m benchmarks.service [--quick] [--json] [--output PATH] [--client raw|httpx]

Three processes besides this one, all on 127.0.0.1: the wire-protocol responder
(``benchmarks/responder.py``, which answers every MongoDB command at once), the store service
(``agent_datastore.server.serve`` over ``connect_async`` to the responder) and the bare endpoint
(``benchmarks/service_apps.py``: Starlette and pymongo's ``AsyncMongoClient`` sending the same
command, under the same uvicorn settings). This process is the load generator: HTTP/1.1 with
keep-alive on asyncio streams (``--client httpx`` for httpx, which costs more CPU per request
than either server on 2 cores), a fixed number of concurrent clients on one event loop, each
with its connection, the same request bytes to both servers, every answer checked against the
bytes expected.

For ``get`` and ``set`` of a 1 KB value, two loads: ``concurrency`` clients at once (the
throughput) and one client at a time (the latency a request pays on an idle server). Rounds
alternate the servers, the order swapped every round (ABBA), so machine noise hits both; the
ratio service/bare is the median of the rounds' ratios. Each server's CPU time per request
comes from ``/proc``. Budget: the service serves at least 0.7x the bare endpoint's requests
per second for ``get`` and ``set``.

Then each server is loaded once more under py-spy (when it is installed), and every sample is
put in the component it was taken in (``benchmarks/service_profile.py``): where the time goes.
Bounded in requests and in time (``--max-seconds``); it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bson
import httpx
from pymongo import MongoClient

import agent_datastore
from agent_datastore import _protocol
from benchmarks import service_profile
from benchmarks.responder import Responder
from benchmarks.run import SEED, make_value

ROOT = Path(__file__).parent.parent
KINDS = ("service", "bare")
VALUE_BYTES = 1024
KEY = "k"
BUDGET_RATIO = 0.7
STARTUP_SECONDS = 30
REQUEST_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Sizes:
    """How much to measure: ``rounds`` per load (even: ABBA), ``requests`` per server and
    round at ``concurrency`` clients, ``single`` per round with one client, and
    ``profile_requests`` of each operation under the profiler."""

    rounds: int
    requests: int
    single: int
    concurrency: int
    profile_requests: int


FULL = Sizes(rounds=10, requests=1000, single=200, concurrency=16, profile_requests=3000)
QUICK = Sizes(rounds=2, requests=24, single=6, concurrency=4, profile_requests=100)


# ------------------------------------------------------------------------------ processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """One server of ``benchmarks.service_apps`` on a free port, until ``stop()``."""

    def __init__(self, kind: str, uri: str, secret: str) -> None:
        self.kind = kind
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "benchmarks.service_apps", kind, "--uri", uri]
        command += ["--port", str(self.port)]
        # uvicorn logs every request, as the service does in production: to a file, so that
        # the log costs both servers the same and a full pipe never stalls one
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "AGENT_DATASTORE_SECRET": secret},
            stdout=self._log,
            stderr=self._log,
        )
        self._wait_until_listening()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"the {self.kind} server exited:\n{self._log.read()}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the {self.kind} server did not listen within {STARTUP_SECONDS} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # uvicorn stops
            try:
                self.process.wait(STARTUP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextmanager
def servers(uri: str, secret: str) -> Iterator[dict[str, ServerProcess]]:
    """Both servers, the service first, until the block ends."""
    started: dict[str, ServerProcess] = {}
    try:
        for kind in KINDS:
            started[kind] = ServerProcess(kind, uri, secret)
        yield started
    finally:
        for server in started.values():
            server.stop()


# ---------------------------------------------------------------------------- the load


@dataclass(frozen=True)
class Workload:
    """One operation's request and the answer every server must give, byte for byte."""

    operation: str
    body: bytes
    expected: bytes
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return f"{_protocol.API_PREFIX}/{self.operation}"


def workloads(value: Any, token: str) -> dict[str, Workload]:
    """What a ``RemoteDataStoreProxy`` sends for ``get`` and ``set`` of ``value``."""
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    get_body = {"namespace": "default", "key": KEY}
    set_body = {**get_body, "value": value}
    return {
        "get": Workload(
            "get",
            _protocol.dumps(get_body),
            _protocol.dumps({"result": {"found": True, "value": value}}),
            headers,
        ),
        "set": Workload(
            "set", _protocol.dumps(set_body), _protocol.dumps({"result": None}), headers
        ),
    }


class HttpxClients:
    """The clients of one server as one ``httpx.AsyncClient`` with a connection per client."""

    def __init__(self, server: ServerProcess, concurrency: int) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_SECONDS)
        self._url = server.url

    async def post(self, slot: int, work: Workload) -> bool:
        """Send ``work``; whether the answer was the expected one."""
        try:
            response = await self._client.post(
                self._url + work.path, content=work.body, headers=work.headers
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.content == work.expected

    async def aclose(self) -> None:
        await self._client.aclose()


class RawClients:
    """The clients of one server as HTTP/1.1 keep-alive connections on asyncio streams, one
    per client, each request's bytes made once. httpx spends about 2 ms of CPU per request
    here, twice what either server spends: with it, the client would be what is measured."""

    def __init__(self, server: ServerProcess, concurrency: int) -> None:
        self._port = server.port
        self._connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]
        self._connections = [None] * concurrency
        self._requests: dict[str, bytes] = {}

    def _request(self, work: Workload) -> bytes:
        made = self._requests.get(work.operation)
        if made is None:
            headers = {
                "host": f"127.0.0.1:{self._port}",
                **work.headers,
                "content-length": str(len(work.body)),
            }
            head = f"POST {work.path} HTTP/1.1\r\n" + "".join(
                f"{name}: {value}\r\n" for name, value in headers.items()
            )
            made = self._requests[work.operation] = head.encode("latin-1") + b"\r\n" + work.body
        return made

    async def post(self, slot: int, work: Workload) -> bool:
        """Send ``work``; whether the answer was the expected one."""
        connection = self._connections[slot]
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", self._port)
                self._connections[slot] = connection
            reader, writer = connection
            writer.write(self._request(work))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT_SECONDS)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            self._drop(slot)
            return False
        return head.startswith(b"HTTP/1.1 200 ") and body == work.expected

    def _drop(self, slot: int) -> None:
        connection, self._connections[slot] = self._connections[slot], None
        if connection is not None:
            connection[1].close()

    async def aclose(self) -> None:
        for slot in range(len(self._connections)):
            self._drop(slot)


Clients = HttpxClients | RawClients
CLIENT_KINDS: dict[str, type[HttpxClients] | type[RawClients]] = {
    "raw": RawClients,
    "httpx": HttpxClients,
}


@dataclass
class Sample:
    """One server's round: how many requests, how long, how many wrong, the CPU it used."""

    requests: int
    seconds: float
    latencies: list[float]
    wrong: int
    server_cpu: float
    generator_cpu: float


async def load(
    clients: Clients,
    server: ServerProcess,
    work: Workload,
    requests: int,
    concurrency: int,
    deadline: float,
) -> Sample:
    """``requests`` requests from ``concurrency`` clients at once (fewer if the deadline
    passes), each answer compared with the expected bytes."""
    remaining = requests
    latencies: list[float] = []
    wrong = 0

    async def client_loop(slot: int) -> None:
        nonlocal remaining, wrong
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            began = time.perf_counter()
            correct = await clients.post(slot, work)
            latencies.append(time.perf_counter() - began)
            wrong += not correct

    cpu_before, generator_before = cpu_seconds(server.pid), time.process_time()
    began = time.perf_counter()
    await asyncio.gather(*(client_loop(slot) for slot in range(concurrency)))
    seconds = time.perf_counter() - began
    return Sample(
        requests=len(latencies),
        seconds=seconds,
        latencies=latencies,
        wrong=wrong,
        server_cpu=cpu_seconds(server.pid) - cpu_before,
        generator_cpu=time.process_time() - generator_before,
    )


def _percentile_ms(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (seconds), in milliseconds."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return round(ordered[rank - 1] * 1000, 3)


def _side(samples: list[Sample]) -> dict[str, Any]:
    requests = sum(sample.requests for sample in samples)
    latencies = [latency for sample in samples for latency in sample.latencies]
    return {
        "requests": requests,
        "wrong": sum(sample.wrong for sample in samples),
        "rps": round(statistics.median(s.requests / s.seconds for s in samples), 1),
        "rps_rounds": [round(s.requests / s.seconds, 1) for s in samples],
        "latency_ms": {
            "p50": _percentile_ms(latencies, 0.5),
            "p99": _percentile_ms(latencies, 0.99),
        },
        "server_cpu_us_per_request": round(
            sum(s.server_cpu for s in samples) / max(requests, 1) * 1e6, 1
        ),
        "generator_cpu_us_per_request": round(
            sum(s.generator_cpu for s in samples) / max(requests, 1) * 1e6, 1
        ),
    }


async def compare(
    running: dict[str, ServerProcess],
    clients: dict[str, Clients],
    work: Workload,
    requests: int,
    concurrency: int,
    rounds: int,
    deadline: float,
) -> dict[str, Any]:
    """``rounds`` rounds of ``work`` on each server, in ABBA order; one row of the report."""
    samples: dict[str, list[Sample]] = {kind: [] for kind in KINDS}
    for round_number in range(rounds):
        order = KINDS if round_number % 2 == 0 else KINDS[::-1]
        for kind in order:
            sample = await load(clients[kind], running[kind], work, requests, concurrency, deadline)
            samples[kind].append(sample)
    pairs = [
        (service, bare)
        for service, bare in zip(samples["service"], samples["bare"], strict=True)
        if service.requests and bare.requests
    ]
    ratios = [(s.requests / s.seconds) / (b.requests / b.seconds) for s, b in pairs]
    service, bare = _side(samples["service"]), _side(samples["bare"])
    return {
        "operation": work.operation,
        "value_bytes": VALUE_BYTES,
        "concurrency": concurrency,
        "rounds": len(pairs),
        "service": service,
        "bare": bare,
        "ratio_rps": round(statistics.median(ratios), 3) if ratios else 0.0,
        "added_latency_ms": {
            name: round(service["latency_ms"][name] - bare["latency_ms"][name], 3)
            for name in ("p50", "p99")
        },
        "added_cpu_us_per_request": round(
            service["server_cpu_us_per_request"] - bare["server_cpu_us_per_request"], 1
        ),
    }


async def _warm(clients: Clients, work: Workload, concurrency: int) -> bool:
    """One request from each client (opening the connections a load uses); whether every
    answer was right."""
    answers = await asyncio.gather(*(clients.post(slot, work) for slot in range(concurrency)))
    return all(answers)


# ------------------------------------------------------------------- the same command


def _plain(value: Any) -> Any:
    """A command as the responder logged it, without what differs between two clients and
    two calls: the session, the cluster time, the clock in the filter."""
    if isinstance(value, dict):
        skipped = {"lsid", "$clusterTime", "txnNumber", "$readPreference"}
        return {k: _plain(v) for k, v in value.items() if k not in skipped}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return "<now>"
    return value


async def same_commands(
    clients: dict[str, Clients],
    jobs: dict[str, Workload],
    responder: MongoClient[dict[str, Any]],
) -> dict[str, bool]:
    """For each operation, whether both servers sent the responder the same command, field
    order included."""
    same = {}
    for operation, work in jobs.items():
        name = "find" if operation == "get" else "update"
        sent = []
        for kind in KINDS:
            await _warm(clients[kind], work, 1)
            last = responder.admin.command("benchLast")["last"]
            sent.append(bson.encode(_plain(last[name])))
        same[operation] = sent[0] == sent[1]
    return same


# ------------------------------------------------------------------------------- running


async def _measure(
    running: dict[str, ServerProcess],
    jobs: dict[str, Workload],
    responder: MongoClient[dict[str, Any]],
    sizes: Sizes,
    client_kind: str,
    deadline: float,
) -> dict[str, Any]:
    make = CLIENT_KINDS[client_kind]
    clients = {kind: make(running[kind], sizes.concurrency) for kind in KINDS}
    try:
        warmed = True
        for kind in KINDS:
            for work in jobs.values():
                warmed &= await _warm(clients[kind], work, sizes.concurrency)
        rows = []
        for concurrency, requests in ((sizes.concurrency, sizes.requests), (1, sizes.single)):
            for work in jobs.values():
                rows.append(
                    await compare(
                        running, clients, work, requests, concurrency, sizes.rounds, deadline
                    )
                )
        return {
            "warm_up_answered": warmed,
            "same_command": await same_commands(clients, jobs, responder),
            "rows": rows,
        }
    finally:
        for each in clients.values():
            await each.aclose()


async def _profile_load(
    server: ServerProcess,
    jobs: dict[str, Workload],
    sizes: Sizes,
    client_kind: str,
    deadline: float,
) -> dict[str, Any]:
    """The load of one server while it is profiled: each operation in turn."""
    clients = CLIENT_KINDS[client_kind](server, sizes.concurrency)
    try:
        samples = [
            await load(clients, server, work, sizes.profile_requests, sizes.concurrency, deadline)
            for work in jobs.values()
        ]
    finally:
        await clients.aclose()
    requests = sum(sample.requests for sample in samples)
    return {
        "requests": requests,
        "wrong": sum(sample.wrong for sample in samples),
        "server_cpu_us_per_request": round(
            sum(sample.server_cpu for sample in samples) / max(requests, 1) * 1e6, 1
        ),
    }


def budgets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for row in rows:
        if row["concurrency"] == 1:
            continue
        checks.append(
            {
                "budget": f"service/bare requests per second for {row['operation']} of 1 KB "
                f">= {BUDGET_RATIO}",
                "measured": row["ratio_rps"],
                "holds": row["ratio_rps"] >= BUDGET_RATIO,
            }
        )
    return checks


def run(
    sizes: Sizes,
    max_seconds: float,
    quick: bool,
    client_kind: str = "raw",
    stacks: Path | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + max_seconds
    rng = random.Random(SEED)
    value = make_value(VALUE_BYTES, rng)
    secret = secrets.token_urlsafe(32)
    token = agent_datastore.issue_token(secret, "user-1", "agent-a", ttl=3600)
    jobs = workloads(value, token)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.service" + (" --quick" if quick else ""),
        "machine": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "sizes": sizes.__dict__,
        "load_client": client_kind,
    }
    with Responder() as responder, MongoClient(responder.uri) as control:
        control.admin.command({"benchConfig": 1, "find": [{"key": KEY, "value": value}]})
        responder_before = cpu_seconds(responder._process.pid)
        with servers(responder.uri, secret) as running:
            measured = asyncio.run(_measure(running, jobs, control, sizes, client_kind, deadline))
            responder_cpu = cpu_seconds(responder._process.pid) - responder_before
            report["profile"] = service_profile.profile(
                {kind: server.pid for kind, server in running.items()},
                lambda kind: asyncio.run(
                    _profile_load(running[kind], jobs, sizes, client_kind, deadline)
                ),
                stacks,
            )
        report.update(measured)
        requests = sum(row[kind]["requests"] for row in measured["rows"] for kind in KINDS)
        report["responder_cpu_us_per_request"] = round(responder_cpu / max(requests, 1) * 1e6, 1)
    report["micro"] = service_profile.micro_timings(secret, token, jobs["set"].body, value, quick)
    report["budgets"] = budgets(report["rows"])
    report["timed_out"] = time.monotonic() > deadline
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def answered_every_request(report: dict[str, Any]) -> bool:
    """Whether both servers answered every request with the expected bytes."""
    return (
        report["warm_up_answered"]
        and all(row[kind]["wrong"] == 0 for row in report["rows"] for kind in KINDS)
        and all(side["wrong"] == 0 for side in report["profile"].get("load", {}).values())
    )


def text(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"store service vs bare endpoint, {VALUE_BYTES} B values, {machine['date']}, "
        f"{machine['cpus']} CPUs, Python {machine['python']}",
        f"same command sent by both: {report['same_command']}",
        "",
        "| Operation | Clients | Service req/s | Bare req/s | Ratio | Service p50 / p99 ms "
        "| Bare p50 / p99 ms | Added p50 ms | Service CPU µs/req | Bare CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        service, bare = row["service"], row["bare"]
        lines.append(
            f"| {row['operation']} | {row['concurrency']} | {service['rps']:.0f} "
            f"| {bare['rps']:.0f} | {row['ratio_rps']:.2f} "
            f"| {service['latency_ms']['p50']:.2f} / {service['latency_ms']['p99']:.2f} "
            f"| {bare['latency_ms']['p50']:.2f} / {bare['latency_ms']['p99']:.2f} "
            f"| {row['added_latency_ms']['p50']:.2f} "
            f"| {service['server_cpu_us_per_request']:.0f} "
            f"| {bare['server_cpu_us_per_request']:.0f} |"
        )
    lines += ["", f"responder CPU per request: {report['responder_cpu_us_per_request']} µs"]
    lines += ["", "| Budget | Measured | Holds |", "|---|---|---|"]
    for check in report["budgets"]:
        holds = "held" if check["holds"] else "**missed**"
        lines.append(f"| {check['budget']} | {check['measured']} | {holds} |")
    lines += ["", *service_profile.text(report["profile"], report["micro"])]
    wrong = "" if answered_every_request(report) else " (NOT every request was answered right)"
    lines += ["", f"took {report['seconds']} s{wrong}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--output", help="also write the JSON report to this file")
    parser.add_argument(
        "--max-seconds", type=float, default=600, help="stop sending after this long (600)"
    )
    parser.add_argument(
        "--client",
        choices=sorted(CLIENT_KINDS),
        default="raw",
        help="the load generator's HTTP client (raw: asyncio streams; httpx costs more CPU "
        "per request than the servers here)",
    )
    parser.add_argument("--stacks", help="write the profiled stacks (py-spy raw) to this folder")
    arguments = parser.parse_args(argv)
    stacks = None
    if arguments.stacks:
        stacks = Path(arguments.stacks)
        stacks.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if arguments.quick else FULL
    report = run(sizes, arguments.max_seconds, arguments.quick, arguments.client, stacks)
    document = json.dumps(report, indent=2) + "\n"
    if arguments.output:
        Path(arguments.output).write_text(document)
    print(document if arguments.json else text(report), end="" if arguments.json else "\n")
    return 0 if answered_every_request(report) else 1


if __name__ == "__main__":
    sys.exit(main())
