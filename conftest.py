"""The ``data_store`` of the examples in README.md and docs/, which pytest executes: a proxy
for user ``user-1``, agent ``agent-a``, namespace ``default`` on a fresh embedded store.

tests/conftest.py replaces it for the test suite with one that also runs on a real server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import agent_datastore


@pytest.fixture
def data_store() -> Iterator[agent_datastore.AgentDataStoreProxy]:
    with agent_datastore.connect("mongomock://") as store:
        yield store.proxy("user-1", "agent-a")


def pytest_report_header() -> str:
    if os.environ.get("MONGODB_URI"):
        return "contract tests: the embedded store and the MongoDB server at $MONGODB_URI"
    return "contract tests: the embedded store only ($MONGODB_URI is not set)"
