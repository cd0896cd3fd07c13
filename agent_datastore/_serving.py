"""How the store service keeps one tenant's large request from holding up the others: a
budget of bytes in flight, request bodies parsed off the event loop, and large answers encoded
off it; and the rate limit per token. Used by ``server`` and the MCP server; no I/O of its own.

What costs the service time is not a body's bytes but the JSON values in it: ``json.loads``
reads a 30 MiB string in about 30 ms but 30 MiB of empty objects in over 2 s, in C code that
holds the GIL the whole time, so a worker thread alone would not free the event loop. A body
is therefore parsed by one of three paths, chosen by an upper bound on its number of values
that costs a few ``bytes.count`` calls (each at memory speed):

- small bodies (most requests) with ``json.loads`` on the loop: well under a millisecond;
- larger bodies with few values with ``json.loads`` in a worker thread, holding the GIL for at
  most about 20 ms;
- bodies with many values with the standard library's pure-Python scanner in a worker thread:
  about five times slower, but as Python code it lets the event loop run every few
  milliseconds, whatever the body holds.

All three are the standard library's own decoder, so every body means the same whichever path
reads it. Answers are encoded the same way: ``json.dumps`` for small ones; large ones in a
worker thread, as Python code, long strings escaped a slice at a time (``json_pieces``), and
sent in pieces (``server``).
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
import math
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator
from typing import Any

from ._exceptions import HTTPException

__all__ = [
    "ANSWER_COPIES",
    "BUSY_WAIT_SECONDS",
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_MAX_INFLIGHT_BYTES",
    "BodyCost",
    "Hold",
    "InflightBudget",
    "ParsedBody",
    "RateLimiter",
    "json_pieces",
    "parse_body",
    "retry_after",
]

DEFAULT_MAX_ANSWER_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
# How long a request waits for room in the budget before it is answered 503.
BUSY_WAIT_SECONDS = 2.0
BUSY_RETRY_AFTER_SECONDS = 1

# One tenant's requests in flight together may hold a quarter of the budget: it takes four
# tenants to fill it.
TENANTS_TO_FILL_BUDGET = 4
# Parsed on the event loop: at most about 16 KiB of JSON, well under a millisecond.
INLINE_PARSE_BYTES = 16 * 1024
# Parsed by json.loads in a worker thread: up to this many values, about 20 ms of C code at
# worst (measured: 160 ns per empty object, the costliest value per byte).
FAST_PARSE_VALUES = 100_000
# An answer is held about three times over while it is built: the driver's reply, the values
# decoded from it, and their JSON. A read takes room for all three.
ANSWER_COPIES = 3
# A large answer is encoded and sent in pieces of about this size.
PIECE_BYTES = 1024 * 1024
# A client that reads none of its answer for this long loses its connection: an unread answer
# would otherwise hold its room in the budget for as long as the connection stays open.
SEND_TIMEOUT_SECONDS = 30.0
# Encoded off the loop: answers that stand for more than this many stored bytes.
LARGE_ANSWER_BYTES = 256 * 1024

# What parsing and encoding a body costs in memory besides its bytes, per value, as counted
# by ``BodyCost``: a dict or list is about 64 bytes in CPython, held twice (the parsed value
# and the encoded copy the store writes); any other value, a pointer and usually an object.
# The text itself is held up to four times (the bytes, their decoding, the parsed strings and
# the driver's BSON).
_CONTAINER_COST = 128
_VALUE_COST = 32
_TEXT_COPIES = 4


class RateLimiter:
    """A token bucket per token id (the verified ``jti``, never the token's text, which a
    client could respell): ``requests`` at once, refilled at ``requests / per_seconds`` a
    second. Only token ids seen within the last period keep a bucket."""

    def __init__(self, requests: int, per_seconds: float) -> None:
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise ValueError(f"rate_limit needs a positive number of requests, not {requests!r}")
        if not isinstance(per_seconds, (int, float)) or not 0 < per_seconds < math.inf:
            raise ValueError(f"rate_limit needs a positive period, not {per_seconds!r}")
        self._capacity = float(requests)
        self._rate = requests / per_seconds
        self._buckets: dict[str, tuple[float, float, float]] = {}  # level, time, token expiry
        self._next_sweep = 10_000
        self._lock = threading.Lock()

    def wait_needed(self, token_id: str, expires_at: float) -> float:
        """0 if the request of the token ``token_id`` may go now (and it is counted), else the
        seconds to wait."""
        now = time.monotonic()
        with self._lock:
            level, last, _ = self._buckets.get(token_id, (self._capacity, now, expires_at))
            level = min(self._capacity, level + (now - last) * self._rate)
            if level < 1:
                self._buckets[token_id] = (level, now, expires_at)
                return (1 - level) / self._rate
            self._buckets[token_id] = (level - 1, now, expires_at)
            if len(self._buckets) > self._next_sweep:
                self._forget_idle(now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that hold nothing a new one would not: refilled, or of an expired
        token. Sweeping again only once the map has doubled keeps the cost per request flat."""
        wall = time.time()
        idle = [
            token_id
            for token_id, (level, last, expires_at) in self._buckets.items()
            if expires_at < wall or level + (now - last) * self._rate >= self._capacity
        ]
        for token_id in idle:
            del self._buckets[token_id]
        self._next_sweep = max(10_000, 2 * len(self._buckets))


def retry_after(wait: float) -> str:
    """The ``Retry-After`` header of a request refused for ``wait`` seconds: whole seconds,
    at least one."""
    return str(max(1, math.ceil(wait)))


class _PureDecoder(json.JSONDecoder):
    """``json.JSONDecoder`` with the standard library's pure-Python scanner: the same grammar
    and values as ``json.loads``, run as Python code (strings are still read by the C
    ``scanstring``)."""

    def __init__(self) -> None:
        super().__init__()
        # the typeshed stubs omit it, but it is public in the module and always defined
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]


_PURE_DECODER = _PureDecoder()


class BodyCost:
    """What parsing and encoding a body is expected to hold in memory, counted chunk by chunk
    as the body arrives, so that a body that could never fit is refused before the rest of it
    is read: its bytes (``_TEXT_COPIES`` times) and an upper bound of its values."""

    __slots__ = ("containers", "separators", "size")

    def __init__(self) -> None:
        self.size = self.containers = self.separators = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.containers += chunk.count(b"{") + chunk.count(b"[")
        self.separators += chunk.count(b",")

    @property
    def values(self) -> int:
        # every value but the first follows a comma or opens a container (an upper bound:
        # commas and brackets inside strings count too)
        return self.containers + self.separators + 1

    @property
    def total(self) -> int:
        return (
            _TEXT_COPIES * self.size
            + _CONTAINER_COST * self.containers
            + _VALUE_COST * (self.separators + 1)
        )


class ParsedBody:
    """A request body and what parsing and encoding it are expected to take (``cost``),
    before it is parsed."""

    __slots__ = ("body", "cost", "values")

    def __init__(self, body: bytes, counted: BodyCost | None = None) -> None:
        if counted is None:
            counted = BodyCost()
            counted.add(body)
        self.body = body
        self.values = counted.values
        self.cost = counted.total

    @property
    def inline(self) -> bool:
        return len(self.body) <= INLINE_PARSE_BYTES

    def parse(self) -> Any:
        """The body as JSON: UTF-8 only (``json.loads`` would also take UTF-16 and UTF-32)."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the request body is not UTF-8 ({exc.reason})") from None
        try:
            if self.values <= FAST_PARSE_VALUES:
                return json.loads(text)
            return _PURE_DECODER.decode(text)
        except RecursionError:
            raise ValueError("the request body is nested too deeply") from None
        except ValueError as exc:
            raise ValueError(f"the request body is not JSON ({exc})") from None


async def parse_body(parsed: ParsedBody) -> Any:
    """``parsed.parse()``, on the loop for a small body, else in a worker thread."""
    if parsed.inline:
        return parsed.parse()
    return await asyncio.to_thread(parsed.parse)


def json_pieces(document: Any) -> list[bytes]:
    """``_protocol.dumps(document)`` in pieces of about ``PIECE_BYTES``, for a large answer
    encoded in a worker thread: as Python code, so that the event loop runs while it works,
    and with long strings escaped a slice at a time (``json`` escapes a 15 MiB string in one
    C call of about 40 ms, holding the interpreter lock the event loop needs)."""
    pieces: list[bytes] = []
    pending: list[str] = []
    size = 0
    for text in _json_text(document):
        pending.append(text)
        size += len(text)
        if size >= PIECE_BYTES:
            pieces.append("".join(pending).encode("utf-8"))
            pending, size = [], 0
    if pending:
        pieces.append("".join(pending).encode("utf-8"))
    return pieces


# A string of the answer is escaped this many characters at a time.
_STRING_SLICE = 256 * 1024
_quoted = json.JSONEncoder(ensure_ascii=False).encode  # a str: escaped and quoted, in C


def _json_text(value: Any) -> Iterator[str]:
    """The JSON text of a value as the store answers it (dicts with string names, lists,
    strings, integers, finite floats, booleans and null), piece by piece, exactly as
    ``_protocol.dumps`` writes it."""
    kind = type(value)
    if kind is str:
        if len(value) <= _STRING_SLICE:
            yield _quoted(value)
            return
        yield '"'
        for start in range(0, len(value), _STRING_SLICE):
            yield _quoted(value[start : start + _STRING_SLICE])[1:-1]
        yield '"'
    elif kind is dict:
        yield "{"
        for index, (name, item) in enumerate(value.items()):
            yield (',"' if index else '"') + _quoted(name)[1:-1] + '":'
            yield from _json_text(item)
        yield "}"
    elif kind is list:
        yield "["
        for index, item in enumerate(value):
            if index:
                yield ","
            yield from _json_text(item)
        yield "]"
    else:  # numbers, booleans and null: one short call each
        yield json.dumps(value, allow_nan=False)


class InflightBudget:
    """Bytes that requests in flight may hold at once: bodies being read, parsed and encoded,
    and answers being built and sent. A request takes what it needs as it goes (``Hold``);
    when there is no room, it waits up to ``BUSY_WAIT_SECONDS`` for others to finish, then is
    answered 503 with ``Retry-After``. A request that would need more than the whole budget on
    its own is answered 413 at once.

    One tenant (a user's agent) may hold at most ``share`` of it with several requests at once
    (a quarter by default), so that no tenant can take all of it by sending many requests in
    parallel; a single request of a tenant that has nothing else in flight may take more, up
    to the whole budget.

    Only the event loop touches it, so it needs no lock."""

    def __init__(self, limit: int, share: int | None = None) -> None:
        self.limit = limit
        self.share = share if share is not None else max(1, limit // TENANTS_TO_FILL_BUDGET)
        self.used = 0
        self._by_tenant: dict[Hashable, int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()

    def free_for(self, hold: Hold) -> int:
        """What ``hold``'s request may take now, beside what it holds."""
        free = self.limit - self.used
        tenant_held = self._by_tenant.get(hold.tenant, 0)
        if tenant_held > hold.held:  # the tenant has other requests in flight
            free = min(free, self.share - tenant_held)
        return free

    def over_budget(self, amount: int) -> HTTPException:
        """The 413 for a request that would hold ``amount`` bytes, more than the whole."""
        return HTTPException(
            413,
            f"the request would hold about {amount} bytes in the service, over its in-flight "
            f"budget of {self.limit} bytes: send less at once",
        )

    async def take(self, hold: Hold, amount: int) -> None:
        if amount <= 0:
            return
        if hold.held + amount > self.limit:
            raise self.over_budget(hold.held + amount)
        if self.free_for(hold) < amount:
            await self._wait_for_room(hold, amount)
        self.take_now(hold, amount)

    async def _wait_for_room(self, hold: Hold, amount: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT_SECONDS
        while self.free_for(hold) < amount:
            remaining = deadline - loop.time()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                raise HTTPException(
                    503,
                    "the service is busy with other requests: try again shortly",
                    {"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
                ) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def take_now(self, hold: Hold, amount: int) -> None:
        """Count ``amount`` for ``hold`` without waiting: also what is already held (a value
        larger than expected, read), which may take the budget past its limit, so that
        requests after it wait."""
        if amount <= 0:
            return
        self.used += amount
        self._by_tenant[hold.tenant] = self._by_tenant.get(hold.tenant, 0) + amount
        hold.held += amount

    def give_back(self, hold: Hold) -> None:
        amount, hold.held = hold.held, 0
        if amount <= 0:
            return
        self.used -= amount
        left = self._by_tenant[hold.tenant] - amount
        if left:
            self._by_tenant[hold.tenant] = left
        else:
            del self._by_tenant[hold.tenant]
        while self._waiters:  # each waiter checks again whether it fits now
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


class Hold:
    """What one request holds of the budget, on behalf of its ``tenant`` (set once its token
    is verified); ``release`` gives it all back once the answer has been sent."""

    __slots__ = ("_budget", "held", "tenant")

    def __init__(self, budget: InflightBudget) -> None:
        self._budget = budget
        self.held = 0
        self.tenant: Hashable = None

    async def take(self, amount: int) -> None:
        await self._budget.take(self, amount)

    def take_now(self, amount: int) -> None:
        self._budget.take_now(self, amount)

    def release(self) -> None:
        self._budget.give_back(self)

    async def release_when_sent(self) -> None:
        """``release``, as the background task of a response: a coroutine, so that Starlette
        runs it on the event loop rather than in its thread pool (a thread hop per request)."""
        self.release()

    async def take_for_answer(self, wanted: int, minimum: int) -> int:
        """Room for an answer of up to ``wanted`` bytes: as much as is free now if that is at
        least ``minimum``, else ``minimum`` once it is (or 503). Reads are bounded by what
        they get, so that under load answers come in smaller pages rather than not at all."""
        free = self._budget.free_for(self)
        amount = min(wanted, free) if free >= minimum else minimum
        # never more than the budget leaves beside what this request already holds
        amount = max(1, min(amount, self._budget.limit - self.held))
        await self.take(amount)
        return amount
