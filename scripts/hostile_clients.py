"""Attackers of the store service, for ``scripts/remote_load_test.py --hostile``: each sends one
abusive pattern to a service on 127.0.0.1, bounded in count and in time, and tallies what it
got back. They run in threads beside the well-behaved clients, until told to stop.

- ``LargeAnswers``: ``get_many`` of keys that each hold a large value (written first with
  ``write_large_values``), so that every answer is the sum of them.
- ``HeavyBodies``: a JSON body of tens of MiB made of empty objects (``{"key": "d", "value":
  [{}, {}, ...]}``) to ``/v1/set``, several at once: cheap to send, costly to parse.
- ``HalfOpen``: raw connections that send part of a request and then nothing: headers that
  never end, or a body shorter than its Content-Length.
- ``TokenFlood``: the same token spelled three ways (as issued, with a trailing ``=``, with
  a junk character) flooding ``get``, against the service's per-token rate limit.

Each reports the answers' statuses, and the failures by kind (``closed`` for a connection the
server closed or reset, ``timeout``, ...). Answers are read and dropped as they arrive, so
that an attacker holds none of them in memory.

At the end, the parts of the hostile run that are not the well-behaved clients' (which stay in
the script): ``HostileSettings`` (the attack sizes and the service's limits), ``MemorySampler``
(the service's resident size from /proc) and ``report_lines`` (the text report).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent_datastore import RemoteDataStoreProxy

NAMESPACE = "attack"
MiB = 2**20
ANSWER_TIMEOUT_SECONDS = 120  # a large answer may take long; every attacker still stops


@dataclass(frozen=True)
class AttackSizes:
    """How hard each attacker pushes. ``FULL`` is the documented run; ``SMALL`` the tests'."""

    value_bytes: int  # each large value
    keys: int  # large values, all asked for by one get_many
    large_answer_clients: int
    large_answer_requests: int  # per client
    heavy_body_bytes: int
    heavy_body_clients: int
    heavy_body_requests: int  # per client
    half_open: int  # connections, half of each kind
    flood_requests: int  # per spelling of the token
    flood_clients: int  # per spelling


FULL = AttackSizes(
    value_bytes=15 * 2**20,
    keys=40,
    large_answer_clients=2,
    large_answer_requests=3,
    heavy_body_bytes=30 * 2**20,
    heavy_body_clients=3,
    heavy_body_requests=2,
    half_open=300,
    flood_requests=300,
    flood_clients=2,
)
SMALL = AttackSizes(
    value_bytes=64 * 2**10,
    keys=40,
    large_answer_clients=2,
    large_answer_requests=3,
    heavy_body_bytes=256 * 2**10,
    heavy_body_clients=2,
    heavy_body_requests=2,
    half_open=40,
    flood_requests=150,
    flood_clients=2,
)


def _failure(exc: Exception) -> str:
    """A failed request's kind, as the report counts it."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "closed"  # the server closed or reset the connection
    if isinstance(exc, httpx.ConnectError):
        return "refused"
    return type(exc).__name__


class Attacker:
    """Threads that each send ``requests`` requests (or until ``stop`` is set), and the tally
    of what came back: status codes as strings, failures by kind."""

    name = ""

    def __init__(self, url: str, clients: int, requests: int) -> None:
        self.url = url
        self.tally: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._requests = requests
        self._threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(clients)
        ]

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def count(self, outcome: str) -> None:
        with self._lock:
            self.tally[outcome] += 1

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=ANSWER_TIMEOUT_SECONDS) as client:
            for _ in range(self._requests):
                if self._stop.is_set():
                    return
                try:
                    self.count(str(self.send(client, index)))
                except Exception as exc:
                    self.count(_failure(exc))

    def send(self, client: httpx.Client, index: int) -> int:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        return {"sent": sum(self.tally.values()), "outcomes": dict(sorted(self.tally.items()))}


def large_keys(sizes: AttackSizes) -> list[str]:
    return [f"large-{index:03d}" for index in range(sizes.keys)]


def write_large_values(url: str, issue: Callable[[], str], sizes: AttackSizes) -> None:
    """The large values that ``LargeAnswers`` asks for, written by the attacker, each with a
    token of its own (``issue``) so that the rate limit does not slow the setup."""
    for index, key in enumerate(large_keys(sizes)):
        with RemoteDataStoreProxy(url, issue(), NAMESPACE, timeout=ANSWER_TIMEOUT_SECONDS) as proxy:
            # each its own text, so that no layer can share one copy between them
            proxy.set(key, f"{index:03d}" + "x" * (sizes.value_bytes - 3))


class LargeAnswers(Attacker):
    name = "large_answers"

    def __init__(self, url: str, token: str, sizes: AttackSizes) -> None:
        super().__init__(url, sizes.large_answer_clients, sizes.large_answer_requests)
        self._headers = {"authorization": f"Bearer {token}"}
        self._body = {"namespace": NAMESPACE, "keys": large_keys(sizes)}
        self.largest_answer = 0

    def send(self, client: httpx.Client, index: int) -> int:
        with client.stream(
            "POST", f"{self.url}/v1/get_many", json=self._body, headers=self._headers
        ) as response:
            size = sum(len(chunk) for chunk in response.iter_bytes())  # read, then dropped
        with self._lock:
            self.largest_answer = max(self.largest_answer, size)
        return response.status_code

    def report(self) -> dict[str, Any]:
        return {**super().report(), "largest_answer_bytes": self.largest_answer}


def heavy_body(size: int) -> bytes:
    """``{"key": "d", "value": [{}, {}, ...]}`` of about ``size`` bytes."""
    head, tail = b'{"key": "d", "value": [', b"]}"
    count = max(1, (size - len(head) - len(tail)) // 4)
    return head + b"{}, " * (count - 1) + b"{}" + tail


class HeavyBodies(Attacker):
    name = "heavy_bodies"

    def __init__(self, url: str, token: str, sizes: AttackSizes) -> None:
        super().__init__(url, sizes.heavy_body_clients, sizes.heavy_body_requests)
        self._headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        self.body = heavy_body(sizes.heavy_body_bytes)  # one copy, sent by every thread

    def send(self, client: httpx.Client, index: int) -> int:
        response = client.post(f"{self.url}/v1/set", content=self.body, headers=self._headers)
        return response.status_code

    def report(self) -> dict[str, Any]:
        return {**super().report(), "body_bytes": len(self.body)}


def token_spellings(token: str) -> dict[str, str]:
    """The token as issued, and two respellings of it: PyJWT accepts a trailing ``=``; a
    ``!`` inside the signature is refused, after the work of checking it."""
    header, payload, signature = token.split(".")
    return {
        "as_issued": token,
        "trailing_equals": token + "=",
        "junk_character": f"{header}.{payload}.{signature[:8]}!{signature[8:]}",
    }


class TokenFlood(Attacker):
    """One spelling of the token, flooding ``get`` from ``flood_clients`` threads."""

    def __init__(self, url: str, spelling: str, token: str, sizes: AttackSizes) -> None:
        super().__init__(url, sizes.flood_clients, sizes.flood_requests // sizes.flood_clients)
        self.name = spelling
        self._headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        self._body = json.dumps({"namespace": NAMESPACE, "key": "flood"}).encode()

    def send(self, client: httpx.Client, index: int) -> int:
        response = client.post(f"{self.url}/v1/get", content=self._body, headers=self._headers)
        return response.status_code


class HalfOpen:
    """Connections that start a request and never finish it: half send a request line and
    one header and stop before the blank line; half send whole headers with a Content-Length
    longer than the body that follows. Held until ``stop``, then each is classified: closed
    by the server, answered (with its status), or still open."""

    name = "half_open"

    def __init__(self, url: str, issue: Callable[[], str], sizes: AttackSizes) -> None:
        self._port = int(url.rsplit(":", 1)[1])
        self._count = sizes.half_open
        self._issue = issue  # a token per connection: the rate limit is another attack
        self.sockets: list[tuple[str, socket.socket]] = []
        self.tally: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _request(self, kind: str) -> bytes:
        start = b"POST /v1/get HTTP/1.1\r\nHost: x\r\n"
        if kind == "headers_unfinished":
            return start
        body = b'{"key": "k"}'
        return (
            start
            + f"Authorization: Bearer {self._issue()}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body) + 1000}\r\n\r\n".encode()
            + body
        )

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        self._thread.start()

    def _run(self) -> None:
        kinds = ("headers_unfinished", "body_short")
        for index in range(self._count):
            if self._stop.is_set():
                break
            kind = kinds[index % len(kinds)]
            try:
                connection = socket.create_connection(("127.0.0.1", self._port), timeout=5)
                connection.sendall(self._request(kind))
            except OSError:
                self.tally[f"{kind}: refused"] += 1
                continue
            self.sockets.append((kind, connection))
        self._stop.wait()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        for kind, connection in self.sockets:
            self.tally[f"{kind}: {self._state(connection)}"] += 1
            connection.close()

    @staticmethod
    def _state(connection: socket.socket) -> str:
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return "still open"
        try:
            data = connection.recv(64)
        except OSError:
            return "closed"
        if not data:
            return "closed"
        status = data.split(b" ", 2)[1].decode("latin-1") if data.startswith(b"HTTP/") else "?"
        return f"answered {status}"

    def report(self) -> dict[str, Any]:
        return {"opened": len(self.sockets), "outcomes": dict(sorted(self.tally.items()))}


def attackers(url: str, issue: Callable[[], str], sizes: AttackSizes) -> list[Any]:
    """Every attacker, not yet started (``write_large_values`` must have run), each with a
    token of its own from ``issue``, so that the rate limit of one never slows another."""
    floods = [
        TokenFlood(url, spelling, text, sizes)
        for spelling, text in token_spellings(issue()).items()
    ]
    return [
        LargeAnswers(url, issue(), sizes),
        HeavyBodies(url, issue(), sizes),
        HalfOpen(url, issue, sizes),
        *floods,
    ]


# ------------------------------------------------------------------- the hostile run's parts

# the service's newer limits, passed only when ``serve --help`` lists them
LIMIT_OPTIONS = ("--max-answer-bytes", "--max-inflight-bytes", "--request-timeout")
CONNECTION_OPTION = "--max-connections"


@dataclass(frozen=True)
class HostileSettings:
    sizes: AttackSizes
    rate_limit: str
    max_answer_bytes: int
    max_inflight_bytes: int
    request_timeout: float
    max_connections: int

    def service_options(self, listed: set[str]) -> list[str]:
        options = ["--rate-limit", self.rate_limit]
        values = (
            self.max_answer_bytes,
            self.max_inflight_bytes,
            self.request_timeout,
            self.max_connections,
        )
        for name, value in zip((*LIMIT_OPTIONS, CONNECTION_OPTION), values, strict=True):
            if name in listed:
                options += [name, str(value)]
        return options


class MemorySampler:
    """The resident size of a process, read from /proc every ``interval`` seconds in a
    thread: the largest VmRSS seen, and VmHWM (the kernel's own peak, which no sample can
    miss)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_rss = 0
        self.samples = 0

    def read(self) -> dict[str, int]:
        """VmRSS and VmHWM in bytes (zeros where /proc cannot be read)."""
        values = {"VmRSS": 0, "VmHWM": 0}
        with suppress(OSError):
            for line in self._path.read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] = int(rest.split()[0]) * 1024  # kB
        return values

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_rss = max(self.peak_rss, self.read()["VmRSS"])
            self.samples += 1

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def report_lines(findings: dict[str, Any]) -> list[str]:
    """The findings of ``remote_load_test.py --hostile`` as the lines of its text report."""
    memory, phases = findings["memory"], findings["phases"]
    lines = [
        "hostile: the attackers ran during the second phase; service options: "
        + " ".join(findings["service_options"]),
    ]
    if findings["before_availability_limits"]:
        lines.append("  (the service has none of the availability limits yet)")
    for name, phase in phases.items():
        latency = phase["latency_ms"]
        lines.append(
            f"  {name.replace('_', ' ')}: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f}"
            f" ms, max {latency['max']:.1f} ms ({phase['requests']} requests, "
            f"{phase['errors']} errors, {phase['seconds']:.1f} s)"
        )
    lines.append(
        f"  service memory: base {memory['base_rss_bytes'] / MiB:.0f} MiB, peak "
        f"{memory['peak_bytes'] / MiB:.0f} MiB, {memory['growth_bytes'] / MiB:.0f} MiB over it"
    )
    for name, got in findings["attackers"].items():
        details = ", ".join(f"{k} {v}" for k, v in got.items() if k != "outcomes")
        lines.append(f"  attacker {name}: {details}; {json.dumps(got['outcomes'])}")
    for check in findings["budgets"]:
        verdict = "held" if check["holds"] else "MISSED"
        lines.append(f"  budget {check['budget']}: {check['measured']} {verdict}")
    return lines
