"""The public surface: names, typing marker, and a light import."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import agent_datastore


def test_all_is_exactly_the_public_surface() -> None:
    assert sorted(agent_datastore.__all__) == [
        "AgentDataStoreProxy",
        "AsyncAgentDataStoreProxy",
        "AsyncDataStore",
        "AsyncRemoteDataStoreProxy",
        "DataStore",
        "DataStoreError",
        "DataStoreUnavailable",
        "HTTPException",
        "Item",
        "ItemInfo",
        "RemoteDataStoreProxy",
        "TokenRejected",
        "VersionConflict",
        "__version__",
        "connect",
        "connect_async",
        "issue_token",
    ]
    for name in agent_datastore.__all__:
        assert getattr(agent_datastore, name) is not None


def test_public_names_are_documented() -> None:
    for name in agent_datastore.__all__:
        if name != "__version__":
            assert getattr(agent_datastore, name).__doc__, name


def test_package_is_typed() -> None:
    assert resources.files("agent_datastore").joinpath("py.typed").is_file()


def test_importing_the_package_loads_no_cli_demo_fake_server_metrics_or_http_client() -> None:
    script = (
        "import sys, agent_datastore\n"
        "loaded = [m for m in ('agent_datastore.cli', 'agent_datastore.demo', 'argparse',"
        " 'mongomock_ng', 'mongomock', 'hypothesis', 'pytest', 'click',"
        " 'agent_datastore.admin', 'agent_datastore.server', 'uvicorn', 'httpx', 'jwt',"
        " 'prometheus_client')"
        " if m in sys.modules]\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert agent_datastore.__version__ == version("agent-datastore")
