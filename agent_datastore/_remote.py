"""The remote proxies: a ``data_store`` that holds a token and the service's address, and no
database client.

``RemoteDataStoreProxy`` has the synchronous proxy's methods, arguments, results and errors;
``AsyncRemoteDataStoreProxy`` is its twin for asyncio, as ``AsyncAgentDataStoreProxy`` is the
local one's. Both build requests and read answers with ``_protocol``, so they differ only in
how the bytes travel (httpx's ``Client`` or ``AsyncClient``). Needs the ``remote`` extra.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _core, _protocol
from ._exceptions import DataStoreUnavailable, HTTPException
from ._items import Item, ItemInfo
from ._protocol import Request
from ._tokens import read_token

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncRemoteDataStoreProxy", "RemoteDataStoreProxy"]

DEFAULT_TIMEOUT = 10.0


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the remote extra is not installed
        raise ImportError(
            "the remote proxy needs its extra: pip install 'agent-datastore[remote]'"
        ) from exc
    return httpx


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, not {url!r}")
    return url.rstrip("/")


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


class _Service:
    """What the proxies made from one token share: the service's address, the token, the
    timeout and the HTTP client (closed with them unless the caller passed its own)."""

    def __init__(self, url: object, token: str, timeout: object, client: Any, owned: bool):
        self.url = _check_url(url)
        self.headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        self.timeout = _check_timeout(timeout)
        self.client = client
        self.owned = owned
        self.limits = _protocol.Limits()

    # One more attempt at most, and only where it is safe: see ``failure``.
    ATTEMPTS = (0, 1)

    def failure(
        self, exc: Exception, request: Request, attempt: int
    ) -> DataStoreUnavailable | None:
        """``None`` when a transport error allows one more attempt, else the error to raise.

        A read is sent once more after a broken connection; a write only when the connection
        could not even be opened, so that nothing reached the service. A timeout is never
        retried: the caller's timeout bounds the call."""
        httpx = _httpx()
        if isinstance(exc, httpx.TimeoutException):
            return DataStoreUnavailable(
                f"the store service did not answer within {self.timeout:g} s"
            )
        retry = attempt == 0 and (request.idempotent or isinstance(exc, httpx.ConnectError))
        if retry:
            return None
        return DataStoreUnavailable(f"cannot reach the store service at {self.url} ({exc!r})")


def _new_service(
    url: object,
    token: object,
    namespace: object,
    timeout: object,
    http_client: Any,
    asynchronous: bool,
) -> tuple[_Service, _core.Scope]:
    """Check every argument, then make the HTTP client (if the caller gave none)."""
    user_id, agent_name = read_token(token)
    assert isinstance(token, str)
    scope = _core.Scope.of(user_id, agent_name, namespace)
    service = _Service(url, token, timeout, http_client, owned=http_client is None)
    if http_client is None:
        httpx = _httpx()
        kind = httpx.AsyncClient if asynchronous else httpx.Client
        service.client = kind(timeout=service.timeout)
    return service, scope


class _RemoteBase(_core.Scoped):
    """What both remote proxies are besides their I/O: the service and the scope, whose user
    and agent are those the token names."""

    __slots__ = ("_scope", "_service")
    _service: _Service

    def _in(self, namespace: object) -> Any:
        twin = object.__new__(type(self))
        twin._service = self._service
        twin._scope = _core.Scope.of(self._scope.user_id, self._scope.agent_name, namespace)
        return twin

    def __repr__(self) -> str:
        scope = self._scope
        return (
            f"{type(self).__name__}(url={self._service.url!r}, user_id={scope.user_id!r}, "
            f"agent_name={scope.agent_name!r}, namespace={scope.namespace!r})"
        )


class RemoteDataStoreProxy(_RemoteBase):
    """The ``data_store`` of one user's agent, served by the store service at ``url``
    (``agent_datastore.server``) to the holder of ``token`` (``issue_token``).

    It has the methods, arguments, results and errors of ``AgentDataStoreProxy``, and holds no
    database client: code in the sandbox can reach only what the token grants. Bad arguments
    raise ``TypeError`` or ``ValueError`` before any request; an unreachable service, or one
    that does not answer within ``timeout`` seconds, raises ``DataStoreUnavailable``; a
    refused token raises ``TokenRejected``. Reads are sent once more after a broken
    connection; writes only when the connection could not be opened.

    Pass ``http_client`` (an ``httpx.Client``) to share one, or to configure TLS or proxies;
    the caller closes it. Otherwise the proxy makes its own, which ``close()`` (or the ``with``
    block) closes. Proxies from ``use_namespace`` share it. Thread-safe.
    """

    __slots__ = ()

    def __init__(
        self,
        url: str,
        token: str,
        namespace: str = "default",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._service, self._scope = _new_service(
            url, token, namespace, timeout, http_client, asynchronous=False
        )

    def _exchange(self, request: Request) -> Any:
        """Send ``request``; the answer document, or its error raised."""
        service = self._service
        content = request.content or _protocol.dumps(request.body)
        for attempt in service.ATTEMPTS:
            try:
                response = service.client.post(
                    service.url + request.path, content=content, headers=service.headers
                )
            except _httpx().TransportError as exc:
                failure = service.failure(exc, request, attempt)
                if failure is None:
                    continue
                raise failure from exc
            return _protocol.answer_of(response.status_code, response.content, response.headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, request: Request) -> Any:
        return self._exchange(request)["result"]

    def _drive(self, calls: _protocol.Calls) -> Any:
        """Run a call of several requests (``_protocol.Calls``) to its result."""
        try:
            request = next(calls)
            while True:
                try:
                    answer = self._exchange(request)
                except HTTPException as exc:
                    request = calls.throw(exc)
                else:
                    request = calls.send(answer)
        except StopIteration as done:
            return done.value

    def get(self, key: str, default: Any = None) -> Any:
        """As ``AgentDataStoreProxy.get``."""
        answer = self._send(_protocol.get_request(self._scope, key))
        return answer["value"] if answer["found"] else default

    def get_item(self, key: str) -> Item | None:
        """As ``AgentDataStoreProxy.get_item``."""
        answer = self._send(_protocol.get_item_request(self._scope, key))
        return None if answer is None else _protocol.item_from_json(answer)

    def set(
        self,
        key: str,
        value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
        if_version: int | None = None,
    ) -> None:
        """As ``AgentDataStoreProxy.set``."""
        self._send(_protocol.set_request(self._scope, key, value, metadata, ttl, if_version))

    def increment(self, key: str, amount: int = 1, *, ttl: float | timedelta | None = None) -> int:
        """As ``AgentDataStoreProxy.increment``."""
        return int(self._send(_protocol.increment_request(self._scope, key, amount, ttl)))

    def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """As ``AgentDataStoreProxy.delete``."""
        return bool(self._send(_protocol.delete_request(self._scope, key, if_version)))

    def _listing(
        self, operation: str, prefix: object, limit: object, start_after: object
    ) -> list[Any]:
        calls = _protocol.listing(self._scope, operation, prefix, limit, start_after)
        return self._drive(calls)  # type: ignore[no-any-return]

    def list_keys(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[str]:
        """As ``AgentDataStoreProxy.list_keys``. The service returns at most 1,000 keys a
        request, so a longer listing is several requests, each after the last key seen."""
        return self._listing("list_keys", prefix, limit, start_after)

    def iter_keys(self, prefix: str | None = None) -> Iterator[str]:
        """As ``AgentDataStoreProxy.iter_keys``: a request per 1,000 keys."""
        checked_prefix = _core.check_prefix(prefix)
        return self._iter_keys(checked_prefix)

    def _iter_keys(self, prefix: str | None) -> Iterator[str]:
        start: str | None = None
        while True:
            request = _protocol.listing_request(
                self._scope, "list_keys", prefix, _core.KEY_PAGE_SIZE, start
            )
            page: list[str] = self._send(request)
            yield from page
            if len(page) < _core.KEY_PAGE_SIZE:
                return
            start = page[-1]

    def list_items(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[ItemInfo]:
        """As ``AgentDataStoreProxy.list_items``, paged by the service as ``list_keys`` is."""
        pages = self._listing("list_items", prefix, limit, start_after)
        return [_protocol.item_info_from_json(info) for info in pages]

    def list_namespaces(self) -> list[str]:
        """As ``AgentDataStoreProxy.list_namespaces``."""
        return list(self._send(Request("list_namespaces", {})))

    def use_namespace(self, namespace: str) -> RemoteDataStoreProxy:
        """A proxy for the same token in ``namespace``, sharing this one's HTTP client."""
        return self._in(namespace)  # type: ignore[no-any-return]

    def clear(self) -> int:
        """As ``AgentDataStoreProxy.clear``."""
        return int(self._send(Request("clear", {"namespace": self.namespace})))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """As ``AgentDataStoreProxy.get_many``. The service answers at most ``max_batch``
        keys, and at most its byte budget, per request: a larger call is several requests,
        so it is not a snapshot."""
        calls = _protocol.get_many_calls(self._scope, keys, self._service.limits)
        return self._drive(calls)  # type: ignore[no-any-return]

    def delete_many(self, keys: Iterable[str]) -> int:
        """As ``AgentDataStoreProxy.delete_many``. The service takes at most ``max_batch``
        keys per request: a larger call is several requests, each deleted before the next
        is sent."""
        calls = _protocol.delete_many_calls(self._scope, keys, self._service.limits)
        return int(self._drive(calls))

    def set_many(
        self,
        items: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        """As ``AgentDataStoreProxy.set_many``. Every item is checked before anything is
        sent; a batch over the service's ``max_batch`` or body limit is sent in parts, each
        written before the next is sent."""
        calls = _protocol.set_many_calls(self._scope, items, metadata, ttl, self._service.limits)
        return int(self._drive(calls))

    def close(self) -> None:
        """Close the HTTP client this proxy made (and its ``use_namespace`` proxies share)."""
        if self._service.owned:
            self._service.client.close()

    def __enter__(self) -> RemoteDataStoreProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRemoteDataStoreProxy(_RemoteBase):
    """``RemoteDataStoreProxy`` for asyncio: the same arguments, results and errors, with
    every method a coroutine (``iter_keys`` an async iterator), on an ``httpx.AsyncClient``.
    Close it with ``await proxy.aclose()`` or ``async with``."""

    __slots__ = ()

    def __init__(
        self,
        url: str,
        token: str,
        namespace: str = "default",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._service, self._scope = _new_service(
            url, token, namespace, timeout, http_client, asynchronous=True
        )

    async def _exchange(self, request: Request) -> Any:
        service = self._service
        content = request.content or _protocol.dumps(request.body)
        for attempt in service.ATTEMPTS:
            try:
                response = await service.client.post(
                    service.url + request.path, content=content, headers=service.headers
                )
            except _httpx().TransportError as exc:
                failure = service.failure(exc, request, attempt)
                if failure is None:
                    continue
                raise failure from exc
            return _protocol.answer_of(response.status_code, response.content, response.headers)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, request: Request) -> Any:
        return (await self._exchange(request))["result"]

    async def _drive(self, calls: _protocol.Calls) -> Any:
        try:
            request = next(calls)
            while True:
                try:
                    answer = await self._exchange(request)
                except HTTPException as exc:
                    request = calls.throw(exc)
                else:
                    request = calls.send(answer)
        except StopIteration as done:
            return done.value

    async def get(self, key: str, default: Any = None) -> Any:
        answer = await self._send(_protocol.get_request(self._scope, key))
        return answer["value"] if answer["found"] else default

    async def get_item(self, key: str) -> Item | None:
        answer = await self._send(_protocol.get_item_request(self._scope, key))
        return None if answer is None else _protocol.item_from_json(answer)

    async def set(
        self,
        key: str,
        value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
        if_version: int | None = None,
    ) -> None:
        await self._send(_protocol.set_request(self._scope, key, value, metadata, ttl, if_version))

    async def increment(
        self, key: str, amount: int = 1, *, ttl: float | timedelta | None = None
    ) -> int:
        return int(await self._send(_protocol.increment_request(self._scope, key, amount, ttl)))

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        return bool(await self._send(_protocol.delete_request(self._scope, key, if_version)))

    async def _listing(
        self, operation: str, prefix: object, limit: object, start_after: object
    ) -> list[Any]:
        calls = _protocol.listing(self._scope, operation, prefix, limit, start_after)
        return await self._drive(calls)  # type: ignore[no-any-return]

    async def list_keys(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[str]:
        return await self._listing("list_keys", prefix, limit, start_after)

    def iter_keys(self, prefix: str | None = None) -> AsyncIterator[str]:
        checked_prefix = _core.check_prefix(prefix)
        return self._iter_keys(checked_prefix)

    async def _iter_keys(self, prefix: str | None) -> AsyncIterator[str]:
        start: str | None = None
        while True:
            request = _protocol.listing_request(
                self._scope, "list_keys", prefix, _core.KEY_PAGE_SIZE, start
            )
            page: list[str] = await self._send(request)
            for key in page:
                yield key
            if len(page) < _core.KEY_PAGE_SIZE:
                return
            start = page[-1]

    async def list_items(
        self,
        prefix: str | None = None,
        *,
        limit: int | None = None,
        start_after: str | None = None,
    ) -> list[ItemInfo]:
        pages = await self._listing("list_items", prefix, limit, start_after)
        return [_protocol.item_info_from_json(info) for info in pages]

    async def list_namespaces(self) -> list[str]:
        return list(await self._send(Request("list_namespaces", {})))

    def use_namespace(self, namespace: str) -> AsyncRemoteDataStoreProxy:
        return self._in(namespace)  # type: ignore[no-any-return]

    async def clear(self) -> int:
        return int(await self._send(Request("clear", {"namespace": self.namespace})))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        calls = _protocol.get_many_calls(self._scope, keys, self._service.limits)
        return await self._drive(calls)  # type: ignore[no-any-return]

    async def delete_many(self, keys: Iterable[str]) -> int:
        calls = _protocol.delete_many_calls(self._scope, keys, self._service.limits)
        return int(await self._drive(calls))

    async def set_many(
        self,
        items: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | timedelta | None = None,
    ) -> int:
        calls = _protocol.set_many_calls(self._scope, items, metadata, ttl, self._service.limits)
        return int(await self._drive(calls))

    async def aclose(self) -> None:
        if self._service.owned:
            await self._service.client.aclose()

    async def __aenter__(self) -> AsyncRemoteDataStoreProxy:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
