"""The data store as a Model Context Protocol server: tools and read-only resources for any
agent that speaks MCP, on stdio or streamable HTTP (``agent-datastore mcp``; docs/mcp.md).

Every tool acts through one async proxy, local (``AsyncAgentDataStoreProxy``) or remote
(``AsyncRemoteDataStoreProxy``), so it follows the proxy's rules and reaches only the proxy's
user and agent. Needs the ``mcp`` extra.
"""

from __future__ import annotations

try:
    import mcp  # noqa: F401  (the official MCP Python SDK)
    import mcp_types  # noqa: F401
except ImportError as exc:  # the mcp extra is not installed
    raise ImportError(
        "agent_datastore.mcp needs the MCP SDK: pip install 'agent-datastore[mcp]'"
    ) from exc

from ._http import TokenVerifier, create_http_app, serve_http
from ._resources import ITEM_TEMPLATE, LISTING_TEMPLATE, item_uri, listing_uri
from ._server import call_tool, create_server
from ._stdio import run_stdio
from ._tools import TOOLS, Tool

__all__ = [
    "ITEM_TEMPLATE",
    "LISTING_TEMPLATE",
    "TOOLS",
    "TokenVerifier",
    "Tool",
    "call_tool",
    "create_http_app",
    "create_server",
    "item_uri",
    "listing_uri",
    "run_stdio",
    "serve_http",
]
