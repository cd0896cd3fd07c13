"""The ``agent-datastore`` command: parses arguments, calls ``agent_datastore.admin`` or a proxy,
formats the result. It never talks to pymongo itself.

Exit codes: 0 success; 1 not found, a failed check or a declined confirmation; 2 usage error
or invalid input; 3 database unavailable; 4 the database refused the operation, an import
rejected some lines, or an export skipped documents that are not JSON; 5 internal error.
"""

from __future__ import annotations

try:
    import click  # noqa: F401  (the cli extra)
except ImportError as exc:  # pragma: no cover - the cli extra is not installed
    raise SystemExit(
        "agent-datastore: the command needs its extra: pip install 'agent-datastore[cli]'"
    ) from exc

# each module registers its commands on the group as it is imported
from . import _commands, _mcp, _serve, _shell, _transfer  # noqa: F401
from ._base import cli as cli  # the click group, for tests and embedding
from ._base import main

__all__ = ["main"]
