"""The MCP server: the tools and resources over one async proxy per caller, on stdio or
streamable HTTP.

On stdio the server acts for one user's agent, fixed when it starts. Over HTTP every request
carries a bearer token that ``verify_token`` checks as the store service does (the SDK's
bearer middleware answers 401 to a missing or refused one), and the request is served by a
proxy for that token's user and agent: a local proxy over the store, or, with a store
service, a remote proxy holding the caller's own token, so that the service checks it again
and the MCP server can never reach more than the token grants.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import mcp_types as types
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from .. import __version__
from .._exceptions import (
    DataStoreError,
    DataStoreUnavailable,
    HTTPException,
    TokenRejected,
    VersionConflict,
)
from . import _resources
from ._tools import TOOLS, Proxy, TooDeepForMCP, Tool

__all__ = [
    "INSTRUCTIONS",
    "UNAVAILABLE",
    "Context",
    "ProxyFor",
    "call_tool",
    "create_server",
    "error_of",
]

logger = logging.getLogger("agent_datastore.mcp")

Context = ServerRequestContext[Any, Any]
ProxyFor = Callable[[Context], Proxy]

INSTRUCTIONS = (
    "A persistent JSON key-value store of your own, kept between sessions: every key lives in "
    'a namespace ("default" unless you name one). Use set/get for single values, get_item '
    "for details (version, expiry), increment for counters, and list_keys to see what is "
    "there. Values are JSON; integers of up to 4,300 digits are kept exactly. A get_many "
    "that lists remaining keys was full: ask for those again."
)
UNAVAILABLE = "the store is unavailable; try again later"
_MAX_MESSAGE_CHARS = 500

_TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}
_VALIDATORS = {tool.name: Draft202012Validator(tool.input_schema) for tool in TOOLS}
# The arguments each tool's schema types "integer": JSON Schema counts 1.0 and 1e0 as integers
# (a number with no fraction), as does JSON itself, and some clients cannot send them
# otherwise (JavaScript has one number type); the proxy takes only Python ints.
_INTEGER_ARGUMENTS = {
    tool.name: [
        name
        for name, schema in tool.input_schema["properties"].items()
        if schema.get("type") == "integer"
    ]
    for tool in TOOLS
}
# Python's refusal of an integer past its int/str conversion limit names a setting of the
# interpreter, which is not the caller's to change; it is said in the caller's terms.
# Python 3.11 and later say "(4300 digits)", 3.10's backport "(4300)"
_INT_DIGITS_LIMIT = re.compile(
    r"Exceeds the limit \((\d+)(?: digits)?\) for integer string conversion"
    r"(?:: value has \d+ digits)?; use sys\.set_int_max_str_digits\(\) to increase the limit"
)


def error_of(exc: Exception) -> tuple[str, str] | None:
    """The kind and message of a tool error for an exception a proxy raised, or ``None`` for
    one no proxy raises (a bug). The message is the proxy's own, except where it could carry
    the database's or the service's words or address: then it only says what happened."""
    if isinstance(exc, VersionConflict):
        return "version_conflict", exc.detail
    if isinstance(exc, TokenRejected):
        return "token_rejected", exc.detail
    if isinstance(exc, DataStoreUnavailable):
        return "unavailable", UNAVAILABLE
    if isinstance(exc, DataStoreError):
        return "refused", "the store refused the operation"
    if isinstance(exc, HTTPException):  # an answer of the store service, such as 413 or 429
        if exc.status_code == 429:
            return "unavailable", "too many requests for this token; try again later"
        if exc.status_code < 500:
            return "refused", exc.detail
        return "unavailable", UNAVAILABLE
    if isinstance(exc, TooDeepForMCP):
        return "too_deep", str(exc)
    if isinstance(exc, (TypeError, ValueError)):
        message = _INT_DIGITS_LIMIT.sub(r"an integer has more than \1 digits", str(exc))
        return "invalid_argument", message
    return None


def _shortened(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def _tool_error(kind: str, message: str) -> types.CallToolResult:
    message = _shortened(message)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)],
        structured_content={"error": kind, "message": message},
        is_error=True,
    )


def _schema_error(tool: Tool, arguments: dict[str, Any]) -> str | None:
    error = best_match(_VALIDATORS[tool.name].iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"invalid arguments{f' at {where}' if where else ''}: {error.message}"


def _with_whole_integers(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` with each integer argument the schema accepted as a whole-number float
    (1.0, 1e0) made the int it stands for; any other value is left for the proxy to judge."""
    converted = {
        name: int(arguments[name])
        for name in _INTEGER_ARGUMENTS[tool.name]
        if type(arguments.get(name)) is float
    }
    return {**arguments, **converted} if converted else arguments


async def call_tool(
    proxy: Proxy, name: str, arguments: dict[str, Any] | None
) -> types.CallToolResult:
    """Run the tool ``name`` on ``proxy``: its arguments checked by its input schema, then by
    the proxy; every error a tool error (``isError``) with the proxy's message."""
    tool = _TOOLS_BY_NAME.get(name)
    if tool is None:
        return _tool_error(
            "unknown_tool", f"no tool {name!r}; the tools are {list(_TOOLS_BY_NAME)}"
        )
    arguments = arguments if arguments is not None else {}
    refusal = _schema_error(tool, arguments)
    if refusal is not None:
        return _tool_error("invalid_argument", refusal)
    arguments = _with_whole_integers(tool, arguments)
    try:
        scoped = proxy.use_namespace(arguments.get("namespace", "default"))
        structured, text = await tool.run(scoped, arguments)
    except Exception as exc:
        failure = error_of(exc)
        if failure is None:
            logger.exception("the tool %s failed", name)
            failure = ("internal", "internal error")
        return _tool_error(*failure)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured
    )


def _tool_listing() -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[
            types.Tool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=tool.input_schema,
                output_schema=tool.output_schema,
                annotations=types.ToolAnnotations(
                    title=tool.title,
                    read_only_hint=tool.read_only,
                    destructive_hint=not tool.read_only,
                    # a set again writes a new version; deleting again changes nothing more
                    idempotent_hint=tool.read_only or tool.name in ("delete", "delete_many"),
                    open_world_hint=False,
                ),
            )
            for tool in TOOLS
        ]
    )


def create_server(proxy: Proxy | ProxyFor) -> Server[Any]:
    """A low-level MCP ``Server`` with the tools and resources, acting through ``proxy``: one
    proxy (stdio, tests), or a function of the request's context that returns the proxy of
    its caller (HTTP)."""
    proxy_for: ProxyFor = proxy if callable(proxy) else (lambda _: proxy)

    async def list_tools(ctx: Context, params: Any) -> types.ListToolsResult:
        return _tool_listing()

    async def on_call_tool(
        ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await call_tool(proxy_for(ctx), params.name, params.arguments)

    async def list_resources(ctx: Context, params: Any) -> types.ListResourcesResult:
        try:
            return await _resources.resources(proxy_for(ctx))
        except Exception as exc:
            raise _resource_error(exc) from None

    async def list_templates(ctx: Context, params: Any) -> types.ListResourceTemplatesResult:
        return _resources.templates()

    async def read_resource(
        ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            return await _resources.read(proxy_for(ctx), params.uri)
        except Exception as exc:
            raise _resource_error(exc) from None

    return Server(
        "agent-datastore",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


def _resource_error(exc: Exception) -> MCPError:
    if isinstance(exc, _resources.ResourceNotFound):
        return MCPError(types.INVALID_PARAMS, str(exc))
    failure = error_of(exc)
    if failure is None:
        logger.error("reading a resource failed", exc_info=exc)
        return MCPError(types.INTERNAL_ERROR, "internal error")
    kind, message = failure
    code = types.INVALID_PARAMS if kind == "invalid_argument" else types.INTERNAL_ERROR
    return MCPError(code, _shortened(message))
