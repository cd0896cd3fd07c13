"""A bounded load test of the store service on loopback: many concurrent remote clients, a
fixed number of requests each, then a check that no write was lost.

Usage: python scripts/remote_load_test.py [--clients N] [--requests M] [--uri URI] [--json]

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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from agent_datastore import RemoteDataStoreProxy, issue_token

NAMESPACE = "load"
SHARED_COUNTER = "shared"
CLIENTS_PER_AGENT = 4  # clients that share one (user, agent), and so its shared counter
AGENTS_PER_USER = 2
GET_MANY_SIZE = 10
LIST_LIMIT = 50
STARTUP_SECONDS = 30
BATCH = 1000
MIX = "of every 8: 2 set, 1 get, 1 get_many, 1 list_keys, 1 increment own, 2 increment shared"


@dataclass
class Client:
    """One client's plan and record: what it wrote, what succeeded, how long each request
    took, and what went wrong."""

    index: int
    user_id: str
    agent_name: str
    written: dict[str, Any] = field(default_factory=dict)
    own_increments: int = 0
    shared_increments: int = 0
    shared_seen: int = 0
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

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.writes_lost == 0 and self.unexpected_keys == 0

    def text(self) -> str:
        latency = self.latency_ms
        lines = [
            f"clients: {self.clients} (threads; up to {CLIENTS_PER_AGENT} share a user and agent)",
            f"requests: {self.requests} ({self.requests // self.clients} per client; {MIX})",
            f"store: {self.uri}; service and clients on 127.0.0.1, {os.cpu_count()} cores",
            f"errors: {self.errors}",
            f"duration: {self.duration_s:.2f} s",
            f"throughput: {self.throughput_rps:.0f} requests/s",
            f"latency: p50 {latency['p50']:.1f} ms, p90 {latency['p90']:.1f} ms, "
            f"p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms",
            f"writes checked: {self.writes_checked}",
            f"writes lost: {self.writes_lost}",
        ]
        if self.unexpected_keys:
            lines.append(f"unexpected keys or increments: {self.unexpected_keys}")
        lines.extend(f"  error: {sample}" for sample in self.error_samples)
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_service(uri: str, secret: str) -> Iterator[str]:
    """``agent-datastore serve`` on a free port of 127.0.0.1, until the block ends; its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "agent_datastore.cli", "serve", "--port", str(port)]
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
            yield url
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
        proxy.set(key, value)
        client.written[key] = value
    elif kind == 1:
        key = own[step % len(own)] if own else f"{client.prefix}missing"
        read = proxy.get(key)
        if read != client.written.get(key):
            return f"get {key!r} read {read!r}, not {client.written.get(key)!r}"
    elif kind == 2:
        count = proxy.increment(client.counter)
        client.own_increments += 1
        if count != client.own_increments:
            return f"increment {client.counter!r} returned {count}, not {client.own_increments}"
    elif kind in (3, 6):
        count = proxy.increment(SHARED_COUNTER)
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
        if listed != own[:LIST_LIMIT]:
            return f"list_keys listed {len(listed)} keys, not the {len(own[:LIST_LIMIT])} written"
    return None


def _run_client(
    client: Client, url: str, secret: str, requests: int, start: threading.Barrier
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
        for step in range(requests):
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
        counts = {SHARED_COUNTER: sum(client.shared_increments for client in members)}
        for client in members:
            values.update(client.written)
            counts[client.counter] = client.own_increments
        counts = {key: count for key, count in counts.items() if count}  # never made otherwise
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
            unexpected += max(0, found.get(key, 0) - count)
        unexpected += len(listed - set(values) - set(counts))
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


def run(clients: int, requests: int, uri: str = "mongomock://") -> Report:
    secret = secrets.token_urlsafe(32)
    plan = _plan(clients, secrets.token_hex(4))
    with running_service(uri, secret) as url:
        # every client has its token and proxy before any sends its first request
        start = threading.Barrier(clients + 1)
        threads = [
            threading.Thread(target=_run_client, args=(client, url, secret, requests, start))
            for client in plan
        ]
        for thread in threads:
            thread.start()
        with suppress(threading.BrokenBarrierError):  # a client failed to start: it says why
            start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        duration = time.perf_counter() - began
        checked, lost, unexpected = _verify(url, secret, plan)
        _clear(url, secret, plan)
    latencies = sorted(latency for client in plan for latency in client.latencies)
    errors = [error for client in plan for error in client.errors]
    kinds = Counter(error.split(": ", 1)[1].split(":")[0] for error in errors)
    total = len(latencies)
    return Report(
        clients=clients,
        requests=total,
        errors=len(errors),
        duration_s=round(duration, 3),
        throughput_rps=round(total / duration, 1) if duration else 0.0,
        latency_ms={
            name: round(_percentile(latencies, fraction), 2)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        writes_checked=checked,
        writes_lost=lost,
        unexpected_keys=unexpected,
        # a database URI can hold a password
        uri="mongomock:// (embedded)" if uri.startswith("mongomock") else "--uri",
        error_samples=[f"{count} x {kind}" for kind, count in kinds.most_common(5)],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--requests", type=int, default=100, help="requests per client (100)")
    parser.add_argument(
        "--uri", default="mongomock://", help="the database behind the service (embedded)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    arguments = parser.parse_args(argv)
    if arguments.clients < 1 or arguments.requests < 1:
        parser.error("--clients and --requests must be at least 1")
    report = run(arguments.clients, arguments.requests, arguments.uri)
    if arguments.json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
