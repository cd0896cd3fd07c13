"""The MCP server on stdio: one user's agent, fixed when the server starts; stdout carries
only the protocol."""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared._context_streams import create_context_streams
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from ._server import _shortened, create_server
from ._tools import Proxy

__all__ = ["STDIN_CLOSED_GRACE_SECONDS", "run_stdio", "serve_lines"]

# After stdin closes, how long the requests already read may take to be answered.
STDIN_CLOSED_GRACE_SECONDS = 60.0


def _unreadable_line_error(exc: Exception) -> SessionMessage:
    """The JSON-RPC answer to a line the transport could not read as a message: -32700 for
    text that is not JSON (or that the SDK's parser refuses: a lone surrogate, nesting past
    its limit, a number of more than 4,300 digits), -32600 for JSON that is no JSON-RPC
    message; ``id`` null, since the request's own could not be read (JSON-RPC 2.0, 5.1)."""
    parser_errors = [
        error["msg"]  # the parser's words and the place, without the input
        for error in (exc.errors() if isinstance(exc, ValidationError) else [])
        if error["type"] == "json_invalid"
    ]
    if parser_errors:
        message = f"Parse error: {_shortened(parser_errors[0])}"
        error = types.ErrorData(code=types.PARSE_ERROR, message=message)
    else:
        error = types.ErrorData(
            code=types.INVALID_REQUEST, message="Invalid Request: not a JSON-RPC message"
        )
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=None, error=error))


class _AnswerCounter:
    """The write side of the server, counting the requests read and not yet answered, so that
    the server is stopped only once every request read before stdin closed has its answer
    (the SDK stops at end of input and cancels the handlers still running)."""

    def __init__(self, stream: WriteStream[SessionMessage]) -> None:
        self._stream = stream
        self.unanswered: Counter[types.RequestId] = Counter()
        self._changed = anyio.Event()

    def read(self, message: types.JSONRPCMessage) -> None:
        if isinstance(message, types.JSONRPCRequest):
            self.unanswered[message.id] += 1
        elif (
            isinstance(message, types.JSONRPCNotification)
            and message.method == "notifications/cancelled"
            and isinstance(message.params, dict)
        ):
            # a cancelled request gets no answer (the specification's "Cancellation")
            self._answered(message.params.get("requestId"))

    def _answered(self, request_id: Any) -> None:
        if self.unanswered.get(request_id, 0) > 0:
            self.unanswered[request_id] -= 1
            if not self.unanswered[request_id]:
                del self.unanswered[request_id]
            self._changed.set()

    async def all_answered(self) -> None:
        while self.unanswered:
            self._changed = anyio.Event()
            await self._changed.wait()

    async def send(self, item: SessionMessage, /) -> None:
        await self._stream.send(item)
        if isinstance(item.message, (types.JSONRPCResponse, types.JSONRPCError)):
            self._answered(item.message.id)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> _AnswerCounter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


async def serve_lines(
    server: Server[Any],
    read_stream: ReadStream[SessionMessage | Exception],
    write_stream: WriteStream[SessionMessage],
) -> None:
    """Run ``server`` on the streams of a line transport (``stdio_server``), answering what
    the SDK's server leaves unanswered: a line that is not a JSON-RPC message gets an error
    with id null instead of silence, and at end of input the requests already read are
    answered (for at most ``STDIN_CLOSED_GRACE_SECONDS``) before the server stops."""
    to_server, server_reads = create_context_streams[SessionMessage | Exception](0)
    answers = _AnswerCounter(write_stream)

    async def relay() -> None:
        async with to_server:
            async for item in read_stream:
                if isinstance(item, Exception):
                    await write_stream.send(_unreadable_line_error(item))
                    continue
                answers.read(item.message)
                await to_server.send(item)
            with anyio.move_on_after(STDIN_CLOSED_GRACE_SECONDS):
                await answers.all_answered()

    async with anyio.create_task_group() as group:
        group.start_soon(relay)
        await server.run(server_reads, answers, server.create_initialization_options())


async def run_stdio(proxy: Proxy) -> None:
    """Serve the tools on this process's stdin and stdout, for ``proxy``'s user and agent,
    until stdin closes and every request read has its answer."""
    server = create_server(proxy)
    async with stdio_server() as (read_stream, write_stream):
        await serve_lines(server, read_stream, write_stream)
