"""The fixtures of the examples in README.md and docs/, which pytest executes.

``data_store`` is a proxy for user ``user-1``, agent ``agent-a``, namespace ``default`` on a
fresh embedded store; tests/conftest.py replaces it for the test suite with one that also runs
on a real server. ``secret`` and ``service_url`` are what a runtime configures for the store
service: its secret, and the address of a service (on 127.0.0.1) in front of a fresh embedded
store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import agent_datastore
from tests.service import ServiceThread


@pytest.fixture
def data_store() -> Iterator[agent_datastore.AgentDataStoreProxy]:
    with agent_datastore.connect("mongomock://") as store:
        yield store.proxy("user-1", "agent-a")


DOCS_SECRET = "the runtime's secret, at least 32 bytes long"


@pytest.fixture
def secret() -> str:
    return DOCS_SECRET


@pytest.fixture(scope="session")
def _docs_service() -> Iterator[ServiceThread]:
    running = ServiceThread()
    yield running
    running.stop()


@pytest.fixture
def service_url(_docs_service: ServiceThread) -> Iterator[str]:
    from agent_datastore.server import create_app

    with agent_datastore.connect("mongomock://") as store:
        url = _docs_service.mount_app(create_app(store, DOCS_SECRET))
        yield url
        _docs_service.unmount(url)


def pytest_report_header() -> str:
    if os.environ.get("MONGODB_URI"):
        return "contract tests: the embedded store and the MongoDB server at $MONGODB_URI"
    return "contract tests: the embedded store only ($MONGODB_URI is not set)"
