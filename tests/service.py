"""The store service on 127.0.0.1 for the tests: a real uvicorn server in a thread, and a
store facade whose proxies are remote proxies bound to tokens.

One server runs for the whole session; each store's application (``create_app`` of a fresh
embedded store) is mounted on it under a path of its own, so a test pays for a new store, not
a new server, and stores of different scopes (a module's, a test's) never meet.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import uvicorn

import agent_datastore
from agent_datastore import AsyncRemoteDataStoreProxy, RemoteDataStoreProxy, issue_token
from agent_datastore.server import create_app

from .twins import LoopThread, SyncOverAsyncProxy

SECRET = "a test secret that is long enough for HS256 signing"


class Mount:
    """An ASGI application that forwards ``/<name>/...`` to the application mounted as
    ``name``, as ``/...``."""

    def __init__(self) -> None:
        self.apps: dict[str, Any] = {}
        self.requests: Counter[str] = Counter()  # requests received, by application
        self._names = itertools.count()

    def add(self, app: Any) -> str:
        name = f"store-{next(self._names)}"
        self.apps[name] = app
        return name

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # nothing to start or stop: stores belong to the tests
        name, _, rest = scope["path"].lstrip("/").partition("/")
        app = self.apps[name]
        self.requests[name] += 1
        path = "/" + rest
        await app({**scope, "path": path, "raw_path": path.encode()}, receive, send)


class ServiceThread:
    """uvicorn serving ``Mount`` on a free port of 127.0.0.1, in a daemon thread."""

    def __init__(self) -> None:
        self.mount = Mount()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            self.mount,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            # as agent_datastore.server.serve: no websockets, so no import of the websockets
            # package, whose legacy module warns (an error here) under older uvicorns
            ws="none",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test service did not start")
            time.sleep(0.01)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the server's event loop, where an async store behind the
        service lives, and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mount_app(self, app: Any) -> str:
        """Serve ``app`` until ``unmount``; the URL a remote proxy uses to reach it."""
        return f"{self.url}/{self.mount.add(app)}"

    def unmount(self, url: str) -> None:
        del self.mount.apps[url.rsplit("/", 1)[1]]

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)


class RemoteStore:
    """A store with ``DataStore``'s interface whose proxies are remote proxies talking to
    ``service``, in front of the embedded store ``backend``. ``collection`` is the backend's,
    for the tests' own inspection.

    A synchronous ``DataStore`` behind the service is used through ``RemoteDataStoreProxy``;
    an ``AsyncDataStore`` through ``AsyncRemoteDataStoreProxy``, behind the synchronous
    interface of ``tests/twins.py``; so both proxies and both ways the service runs a store
    are tested."""

    def __init__(self, service: ServiceThread, backend: Any, **app_options: Any) -> None:
        self.service = service
        self.backend = backend
        self.asynchronous = isinstance(backend, agent_datastore.AsyncDataStore)
        self.collection = backend.collection
        self.app = create_app(backend, SECRET, **app_options)
        self.url = service.mount_app(self.app)
        self._proxies: list[Any] = []
        self._runner = LoopThread() if self.asynchronous else None

    @property
    def requests(self) -> int:
        """How many HTTP requests this store's application has received."""
        return self.service.mount.requests[self.url.rsplit("/", 1)[1]]

    def token(self, user_id: str, agent_name: str) -> str:
        return issue_token(SECRET, user_id, agent_name)

    def proxy(self, user_id: str, agent_name: str, namespace: str = "default") -> Any:
        token = self.token(user_id, agent_name)
        if self._runner is None:
            proxy = RemoteDataStoreProxy(self.url, token, namespace)
            self._proxies.append(proxy)
            return proxy
        twin = AsyncRemoteDataStoreProxy(self.url, token, namespace)
        self._proxies.append(twin)
        return SyncOverAsyncProxy(twin, self._runner, self)  # type: ignore[arg-type]

    def ensure_indexes(self) -> None:
        if self.asynchronous:
            self.service.run(self.backend.ensure_indexes())
        else:
            self.backend.ensure_indexes()

    def now(self) -> Any:
        return self.backend.now()

    @property
    def max_value_bytes(self) -> int:
        return int(self.backend.max_value_bytes)

    def close(self) -> None:
        self.service.unmount(self.url)
        if self._runner is None:
            for proxy in self._proxies:
                proxy.close()
            self.backend.close()
            return
        for twin in self._proxies:
            self._runner.run(twin.aclose())
        self._runner.stop()
        self.service.run(self.backend.aclose())

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote_store(
    service: ServiceThread, clock: Any, asynchronous: bool = False, **app_options: Any
) -> Iterator[RemoteStore]:
    connect = agent_datastore.connect_async if asynchronous else agent_datastore.connect
    with RemoteStore(service, connect("mongomock://", clock=clock), **app_options) as store:
        yield store
