"""Attackers of the store service, for ``scripts/remote_load_test.py --hostile``: each sends one
abusive pattern to a service on 127.0.0.1, bounded in count and in time, and tallies what it
got back. They run in threads of a process of their own (``python hostile_clients.py``, driven
by ``AttackProcess``), until told to stop: in the well-behaved clients' process, reading 60 MB
answers would take that process's interpreter lock from the clients whose latency is measured.

- ``LargeAnswers``: ``get_many`` of keys that each hold a large value (written first with
  ``write_large_values``), so that every answer is the sum of them.
- ``HeavyBodies``: a JSON body of tens of MiB made of empty objects (``{"key": "d", "value":
  [{}, {}, ...]}``) to ``/v1/set``, several at once: cheap to send, costly to parse.
- ``HalfOpen``: raw connections that send part of a request and then nothing: headers that
  never end, or a body shorter than its Content-Length; held past the service's request
  timeout, to count those it closed.
- ``TokenFlood``: the same token spelled three ways (as issued, with a trailing ``=``, with
  a junk character) flooding ``get``, against the service's per-token rate limit.

Each reports the answers' statuses, and the failures by kind (``closed`` for a connection the
server closed or reset, ``timeout``, ...). Answers are read and dropped as they arrive, so
that an attacker holds none of them in memory.

At the end, the parts of the hostile run that are not the well-behaved clients' (which stay in
the script): ``HostileSettings`` (the attack sizes and the service's limits), ``MemorySampler``
(the service's resident size from /proc, with a peak per phase) and ``report_lines`` (the text
report).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from agent_datastore import RemoteDataStoreProxy, issue_token

NAMESPACE = "attack"
MiB = 2**20
ANSWER_TIMEOUT_SECONDS = 120  # a large answer may take long; every attacker still stops
STOP_SECONDS = 30.0  # attackers still sending when told to stop get this long to end


@dataclass(frozen=True)
class AttackSizes:
    """How hard each attacker pushes. ``FULL`` is the documented run; ``SMALL`` the tests'."""

    value_bytes: int  # each large value
    keys: int  # large values, all asked for by one get_many
    large_answer_clients: int
    # Requests per client are at most these: every attacker stops when its phase ends, so
    # that the well-behaved clients meet the attack from their first request to their last.
    large_answer_requests: int  # per client
    heavy_body_bytes: int
    heavy_body_clients: int
    heavy_body_requests: int  # per client
    half_open: int  # connections, half of each kind
    flood_requests: int  # per spelling of the token
    flood_clients: int  # per spelling
    settle_seconds: float  # the attackers' head start on the well-behaved clients, each phase


FULL = AttackSizes(
    value_bytes=15 * 2**20,
    keys=40,
    large_answer_clients=2,
    large_answer_requests=25,
    heavy_body_bytes=30 * 2**20,
    heavy_body_clients=3,
    heavy_body_requests=10,
    half_open=300,
    flood_requests=300,
    flood_clients=2,
    settle_seconds=1.0,
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
    settle_seconds=0.3,
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
    longer than the body that follows. Each is held ``hold_seconds`` after the last one was
    opened (longer than the service's request timeout, so that the service has had its chance
    to close them), and at most until ``stop`` plus that; then each is classified: closed by
    the server, answered (with its status), or still open."""

    name = "half_open"

    def __init__(
        self, url: str, issue: Callable[[], str], sizes: AttackSizes, hold_seconds: float
    ) -> None:
        self._port = int(url.rsplit(":", 1)[1])
        self._count = sizes.half_open
        self._issue = issue  # a token per connection: the rate limit is another attack
        self.hold_seconds = hold_seconds
        self.sockets: list[tuple[str, socket.socket]] = []
        self.tally: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._held_until = 0.0

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
        self._held_until = time.monotonic() + self.hold_seconds

    def seconds_left(self) -> float:
        """How much longer the connections are to be held (the phase waits for it)."""
        if self._thread.is_alive():
            return self.hold_seconds
        return max(0.0, self._held_until - time.monotonic())

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        time.sleep(max(0.0, min(self.seconds_left(), deadline - time.monotonic())))
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
        closed = sum(count for outcome, count in self.tally.items() if outcome.endswith("closed"))
        return {
            "opened": len(self.sockets),
            "held_seconds": self.hold_seconds,
            "closed_by_server": closed,
            "outcomes": dict(sorted(self.tally.items())),
        }


# The attacks, each run alone beside the well-behaved clients, then all together.
ATTACKS = ("large_answers", "heavy_bodies", "half_open", "token_respellings")


def attackers(
    url: str,
    issue_for: Callable[[str], Callable[[], str]],
    sizes: AttackSizes,
    attacks: tuple[str, ...] = ATTACKS,
    half_open_hold_seconds: float = 0.0,
) -> list[Any]:
    """The attackers of ``attacks`` (names of ``ATTACKS``), not yet started
    (``write_large_values`` must have run for ``large_answers``). ``issue_for(attack)`` issues
    that attack's tokens: each attacker has a token of its own, so that the rate limit of one
    never slows another. ``token_respellings`` is three attackers, one per spelling of one
    token."""
    chosen: list[Any] = []
    for attack in attacks:
        issue = issue_for(attack)
        if attack == "large_answers":
            chosen.append(LargeAnswers(url, issue(), sizes))
        elif attack == "heavy_bodies":
            chosen.append(HeavyBodies(url, issue(), sizes))
        elif attack == "half_open":
            chosen.append(HalfOpen(url, issue, sizes, half_open_hold_seconds))
        elif attack == "token_respellings":
            chosen.extend(
                TokenFlood(url, spelling, text, sizes)
                for spelling, text in token_spellings(issue()).items()
            )
        else:
            raise ValueError(f"no attack {attack!r}: one of {', '.join(ATTACKS)}")
    return chosen


# ------------------------------------------------------------ the attackers' own process


class AttackProcess:
    """The attackers of ``attacks`` at work in a child process (this file run as a script),
    from ``start`` until ``stop``, which returns what each got. Tokens are issued in the child
    with ``secret``, which it reads from its standard input, never from its command line."""

    def __init__(
        self,
        url: str,
        secret: str,
        scope: tuple[str, str],
        sizes: AttackSizes,
        attacks: tuple[str, ...],
        half_open_hold_seconds: float,
    ) -> None:
        self._config = {
            "url": url,
            "secret": secret,
            "scope": list(scope),
            "sizes": asdict(sizes),
            "attacks": list(attacks),
            "half_open_hold_seconds": half_open_hold_seconds,
        }
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the attackers; returns once every one of them is at work."""
        # the child finds this package where this process found it
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
        self._process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps(self._config) + "\n")
        self._process.stdin.flush()
        if self._process.stdout.readline().strip() != "started":
            self._process.kill()
            self._process.wait()
            raise RuntimeError(f"the attackers' process failed ({self._process.returncode})")

    def stop(self, timeout: float) -> dict[str, Any]:
        """Stop the attackers, and what each got; waits up to ``timeout`` seconds for them."""
        process = self._process
        assert process is not None
        try:
            out, _ = process.communicate("stop\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"the attackers did not stop within {timeout:g} s") from None
        reports: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return reports


def _attack_until_told(config: dict[str, Any]) -> dict[str, Any]:
    """``AttackProcess``'s child: start the attackers, wait for "stop" (or the parent's end)
    on standard input, stop them, and return what each got."""
    sizes = AttackSizes(**config["sizes"])
    secret, (user, agent) = config["secret"], config["scope"]

    def issue_for(attack: str) -> Callable[[], str]:
        # large answers read the values stored for (user, agent); every other attack is a
        # tenant of its own, so that the service's per-tenant share of its in-flight budget
        # does not make the attacks slow each other down when they run together
        tenant = agent if attack == "large_answers" else f"{agent}-{attack.replace('_', '-')}"
        return lambda: issue_token(secret, user, tenant)

    stop = threading.Event()
    attack = attackers(
        config["url"],
        issue_for,
        sizes,
        tuple(config["attacks"]),
        config["half_open_hold_seconds"],
    )
    for attacker in attack:
        attacker.start(stop)
    print("started", flush=True)
    sys.stdin.readline()
    stop.set()
    deadline = time.monotonic() + STOP_SECONDS + config["half_open_hold_seconds"]
    for attacker in attack:
        attacker.join(max(0.0, deadline - time.monotonic()))
    return {attacker.name: attacker.report() for attacker in attack}


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

    @property
    def half_open_hold_seconds(self) -> float:
        """How long ``HalfOpen`` holds its connections: past the request timeout by as much
        again (the service's timers may run late while its event loop is busy), and a second."""
        return 2 * self.request_timeout + 1

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
    miss). ``reset_peak`` starts both over, so that each phase of a run has a peak of its own.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._proc = Path(f"/proc/{pid}")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()
        self.peak_rss = 0
        self.samples = 0
        # whether VmHWM was reset by the kernel at the last reset_peak (else it is the
        # process's peak since it started, and only the samples are the phase's)
        self.kernel_peak = True

    def read(self) -> dict[str, int]:
        """VmRSS and VmHWM in bytes (zeros where /proc cannot be read)."""
        values = {"VmRSS": 0, "VmHWM": 0}
        with suppress(OSError):
            for line in (self._proc / "status").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] = int(rest.split()[0]) * 1024  # kB
        return values

    def reset_peak(self) -> int:
        """Start the peak over from the resident size now, which it returns: "5" written to
        /proc/PID/clear_refs sets the kernel's VmHWM to the current VmRSS (Linux 4.0 and
        later, for a process of one's own)."""
        try:
            (self._proc / "clear_refs").write_text("5")
            self.kernel_peak = True
        except OSError:
            self.kernel_peak = False
        rss = self.read()["VmRSS"]
        with self._lock:
            self.peak_rss = rss
        return rss

    def peak(self) -> int:
        """The largest resident size since the last ``reset_peak``."""
        values = self.read()
        with self._lock:
            sampled = max(self.peak_rss, values["VmRSS"])
        return max(sampled, values["VmHWM"]) if self.kernel_peak else sampled

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self.read()["VmRSS"]
            with self._lock:
                self.peak_rss = max(self.peak_rss, rss)
            self.samples += 1

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _phase_line(name: str, phase: dict[str, Any], quiet_p99: float, base: int) -> str:
    latency, memory = phase["latency_ms"], phase["memory"]
    ratio = latency["p99"] / max(quiet_p99, 0.001)
    return (
        f"  {name:<18} {latency['p50']:>7.1f} {latency['p99']:>8.1f} {ratio:>6.1f}x "
        f"{latency['max']:>8.1f} {phase['errors']:>6} {phase['seconds']:>6.1f} "
        f"{memory['start_rss_bytes'] / MiB:>9.0f} {memory['peak_bytes'] / MiB:>8.0f} "
        f"{(memory['peak_bytes'] - base) / MiB:>9.0f}"
    )


def _attacker_line(name: str, got: dict[str, Any]) -> str:
    details = ", ".join(f"{k} {v}" for k, v in got.items() if k != "outcomes")
    return f"    {name}: {details}; {json.dumps(got['outcomes'])}"


def report_lines(findings: dict[str, Any]) -> list[str]:
    """The findings of ``remote_load_test.py --hostile`` as the lines of its text report."""
    memory, phases = findings["memory"], findings["phases"]
    base = memory["base_rss_bytes"]
    quiet_p99 = phases["without_attackers"]["latency_ms"]["p99"]
    lines = [
        "hostile: the well-behaved clients alone, beside each attack alone, then beside all "
        "together; service options: " + " ".join(findings["service_options"]),
    ]
    environment = findings.get("service_environment")
    if environment:
        lines.append(
            "  service environment: " + " ".join(f"{k}={v}" for k, v in environment.items())
        )
    if findings["before_availability_limits"]:
        lines.append("  (the service has none of the availability limits yet)")
    lines.append(
        f"  service memory: base {base / MiB:.0f} MiB (at rest: "
        f"{memory['at_rest_rss_bytes'] / MiB:.0f} MiB, then the attackers' large values "
        "stored and the well-behaved phase run)"
    )
    lines.append(
        f"  {'phase':<18} {'p50 ms':>7} {'p99 ms':>8} {'p99 x':>7} {'max ms':>8} {'errors':>6} "
        f"{'s':>6} {'start MiB':>9} {'peak MiB':>8} {'over base':>9}"
    )
    for name, phase in phases.items():
        lines.append(_phase_line(name, phase, quiet_p99, base))
    for name, phase in phases.items():
        if phase.get("attackers"):
            lines.append(f"  attackers in {name}:")
            lines.extend(_attacker_line(*attacker) for attacker in phase["attackers"].items())
    for check in findings["budgets"]:
        verdict = "held" if check["holds"] else "MISSED"
        lines.append(f"  budget {check['budget']}: {check['measured']} {verdict}")
    return lines


if __name__ == "__main__":
    print(json.dumps(_attack_until_told(json.loads(sys.stdin.readline()))), flush=True)
