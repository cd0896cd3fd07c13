"""Tenancy through the store service: only a valid token opens data, only its own user's
agent's, and the service never tells a client what its database said."""

from __future__ import annotations

import base64
import json
import secrets
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from pymongo.errors import OperationFailure

import agent_datastore
from agent_datastore import (
    DataStore,
    DataStoreError,
    DataStoreUnavailable,
    HTTPException,
    RemoteDataStoreProxy,
    TokenRejected,
    _protocol,
    issue_token,
)
from agent_datastore.server import create_app

from .helpers import snapshot
from .service import SECRET, RemoteStore, ServiceThread
from .test_errors import FailingCollection

OTHER_SECRET = "a different secret, also long enough for HS256!"


@pytest.fixture
def remote(service: ServiceThread) -> Iterator[RemoteStore]:
    with RemoteStore(service, agent_datastore.connect("mongomock://")) as store:
        owner = store.proxy("user-1", "agent-a")
        owner.set("k", {"secret": "user-1's"}, metadata={"m": 1})
        owner.use_namespace("private").set("p", 1)
        store.proxy("user-2", "agent-a").set("theirs", 2)
        yield store


def _post(url: str, operation: str, body: Any, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/v1/{operation}", json=body, headers=headers)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "agent-datastore", "sub": "user-1", "agt": "agent-a", "iat": now}
    claims["exp"] = now + 600
    # a token id of its own, as issue_token writes: each bad token fails only for its flaw
    claims["jti"] = secrets.token_urlsafe(12)
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _tampered() -> str:
    """A valid token for user-2 whose payload was rewritten to name user-1."""
    header, _, signature = issue_token(SECRET, "user-2", "agent-a").split(".")
    return ".".join([header, _segment(_claims()), signature])


def _hs512() -> str:
    """Signed with the right secret, but not with the one algorithm the service accepts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(_claims(), SECRET, algorithm="HS512")


BAD_TOKENS = {
    "signed with another secret": lambda: issue_token(OTHER_SECRET, "user-1", "agent-a"),
    "expired": lambda: jwt.encode(_claims(iat=1, exp=2), SECRET, algorithm="HS256"),
    "issued in the future": lambda: jwt.encode(
        _claims(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200), SECRET, "HS256"
    ),
    "payload rewritten": _tampered,
    "unsigned (alg none)": lambda: jwt.encode(_claims(), None, algorithm="none"),
    "another HMAC algorithm": lambda: _hs512(),
    "without an agent": lambda: jwt.encode(_claims(agt=None), SECRET, algorithm="HS256"),
    "without an expiry": lambda: jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"),
    "another issuer": lambda: jwt.encode(_claims(iss="someone"), SECRET, algorithm="HS256"),
    "an empty user": lambda: jwt.encode(_claims(sub=""), SECRET, algorithm="HS256"),
    "a user that is not a string": lambda: jwt.encode(_claims(sub=7), SECRET, "HS256"),
    "not a token": lambda: "not.a.token",
}
READS_AND_WRITES = [
    ("get", {"key": "k"}),
    ("get_item", {"key": "k"}),
    ("list_keys", {"limit": 10}),
    ("list_namespaces", {}),
    ("get_many", {"keys": ["k"]}),
    ("set", {"key": "k", "value": "overwritten"}),
    ("delete", {"key": "k"}),
    ("delete_many", {"keys": ["k", "n"]}),
    ("clear", {}),
    ("set_many", {"items": {"k": 0}}),
    ("increment", {"key": "n"}),
    ("find_items", {"within": "agent", "limit": 10}),
    ("refresh_expiry", {"items": [["default", "k"]], "ttl_field": "ttl"}),
]


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=list(BAD_TOKENS))
@pytest.mark.parametrize(
    ("operation", "body"), READS_AND_WRITES, ids=[o for o, _ in READS_AND_WRITES]
)
def test_a_bad_token_is_refused_and_reaches_no_data(
    remote: RemoteStore, make_token: Any, operation: str, body: dict[str, Any]
) -> None:
    before = snapshot(remote.backend)
    response = _post(remote.url, operation, body, make_token())
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "TokenRejected"
    assert "user-1's" not in response.text
    assert "result" not in response.json()
    assert snapshot(remote.backend) == before


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ..", "Basic dXNlcjpwYXNz", "token"])
def test_a_request_without_a_bearer_token_is_refused(remote: RemoteStore, header: str) -> None:
    response = httpx.post(
        f"{remote.url}/v1/get", json={"key": "k"}, headers={"authorization": header}
    )
    assert response.status_code == 401
    assert "user-1's" not in response.text


def test_the_remote_proxy_raises_token_rejected_for_a_refused_token(remote: RemoteStore) -> None:
    proxy = RemoteDataStoreProxy(remote.url, BAD_TOKENS["expired"]())
    with proxy, pytest.raises(TokenRejected) as raised:
        proxy.get("k")
    assert raised.value.status_code == 401
    assert isinstance(raised.value, HTTPException)
    assert "expired" in raised.value.detail


def test_another_users_token_sees_only_that_users_data(remote: RemoteStore) -> None:
    other = remote.proxy("user-2", "agent-a")
    assert other.get("k") is None
    assert other.list_keys() == ["theirs"]
    assert other.list_namespaces() == ["default"]
    assert other.delete("k") is False
    assert other.clear() == 1  # its own item
    owner = remote.proxy("user-1", "agent-a")
    assert owner.get("k") == {"secret": "user-1's"}
    assert remote.proxy("user-1", "agent-b").get("k") is None


def test_delete_many_deletes_only_the_tokens_own_items(remote: RemoteStore) -> None:
    other = remote.proxy("user-2", "agent-a")
    # "k" and "p" are user-1's; the body can name only keys, never whose
    assert other.delete_many(["k", "p", "theirs", "k"]) == 1
    assert other.list_keys() == []
    owner = remote.proxy("user-1", "agent-a")
    assert owner.get("k") == {"secret": "user-1's"}
    assert owner.use_namespace("private").get("p") == 1


def test_find_items_of_another_user_s_values_finds_nothing(remote: RemoteStore) -> None:
    token = remote.token("user-2", "agent-a")
    for value_filter in [{}, {"secret": "user-1's"}, {"userId": "user-1"}]:
        body = {"within": "agent", "limit": 10, "filter": value_filter}
        response = _post(remote.url, "find_items", body, token)
        assert response.status_code == 200
        assert "user-1's" not in response.text
        found = [(item["namespace"], item["key"]) for item in response.json()["result"]]
        assert found == ([("default", "theirs")] if not value_filter else [])


WIDENING_FIELDS = [
    {"user_id": "user-2"},
    {"userId": "user-2"},
    {"agent_name": "agent-b"},
    {"agentName": "agent-b"},
    {"scope": {"user_id": "user-2"}},
    {"token": "x"},
    {"filter": {}},
]


# Each operation with each field that is not its own (find_items' own "filter" is a condition
# on values, which the service translates itself: see test_find_items_of_another_user_s_...).
WIDENED_REQUESTS = [
    pytest.param(operation, body, extra, id=f"{operation}-{next(iter(extra))}")
    for operation, body in READS_AND_WRITES
    for extra in WIDENING_FIELDS
    if not set(extra) <= _protocol.OPERATIONS[operation].fields
]


@pytest.mark.parametrize(("operation", "body", "extra"), WIDENED_REQUESTS)
def test_no_request_field_can_name_another_scope(
    remote: RemoteStore, extra: dict[str, Any], operation: str, body: dict[str, Any]
) -> None:
    before = snapshot(remote.backend)
    token = remote.token("user-2", "agent-a")
    response = _post(remote.url, operation, {**body, **extra}, token)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "ValueError"
    assert "user-1's" not in response.text
    assert snapshot(remote.backend) == before


INJECTIONS = [
    ("get", {"key": {"$ne": None}}),
    ("get", {"key": "k", "namespace": {"$ne": None}}),
    ("get_many", {"keys": [{"$gt": ""}]}),
    ("list_keys", {"limit": 10, "prefix": {"$regex": ".*"}}),
    ("list_keys", {"limit": 10, "start_after": {"$gt": ""}}),
    ("delete", {"key": {"$exists": True}}),
    ("delete_many", {"keys": [{"$exists": True}]}),
    ("delete_many", {"keys": {"$in": ["k"]}}),
    ("set", {"key": "k", "value": 1, "metadata": {"$set": {"userId": "user-1"}}}),
    ("set_many", {"items": [["k", 1]]}),
    ("clear", {"namespace": ["default", "private"]}),
    ("find_items", {"within": "agent", "limit": 10, "filter": {"$where": "true"}}),
    ("find_items", {"within": "agent", "limit": 10, "filter": {"$or": [{"userId": "user-1"}]}}),
    ("find_items", {"within": "agent", "limit": 10, "filter": {"secret": {"$regex": "."}}}),
    ("find_items", {"within": "agent", "limit": 10, "filter": {"value.secret": "user-1's"}}),
    ("find_items", {"within": {"$ne": None}, "limit": 10}),
    ("refresh_expiry", {"items": [["default", {"$gt": ""}]], "ttl_field": "ttl"}),
    ("refresh_expiry", {"items": [["default", "k"]], "ttl_field": {"$gt": ""}}),
]


@pytest.mark.parametrize(("operation", "body"), INJECTIONS)
def test_query_operators_in_a_body_are_refused_as_bad_input(
    remote: RemoteStore, operation: str, body: dict[str, Any]
) -> None:
    before = snapshot(remote.backend)
    response = _post(remote.url, operation, body, remote.token("user-2", "agent-a"))
    assert response.status_code == 400
    assert response.json()["error"]["type"] in ("TypeError", "ValueError")
    assert snapshot(remote.backend) == before


def test_a_body_that_is_not_a_json_object_is_refused(remote: RemoteStore) -> None:
    token = remote.token("user-1", "agent-a")
    headers = {"authorization": f"Bearer {token}"}
    for content in [b"", b"[]", b'"k"', b"{", b"\xff\xfe", b"[" * 100_000]:
        response = httpx.post(f"{remote.url}/v1/get", content=content, headers=headers)
        assert response.status_code == 400, content[:10]


def _app_over(store: DataStore | Any) -> Any:
    return create_app(store, SECRET)


def test_the_service_never_tells_a_client_the_databases_own_words(
    service: ServiceThread,
) -> None:
    refusal = OperationFailure(
        "not authorized on tenants_db to execute command { find: 'items' } as admin:hunter2",
        code=13,
    )
    store = DataStore(FailingCollection(refusal), ensure_indexes=False)
    url = service.mount_app(_app_over(store))
    token = issue_token(SECRET, "user-1", "agent-a")
    try:
        for operation, body in READS_AND_WRITES:
            response = _post(url, operation, body, token)
            assert response.status_code == 500, operation
            assert response.json()["error"]["type"] == "DataStoreError"
            for word in ("hunter2", "admin", "tenants_db", "not authorized", "find"):
                assert word not in response.text, (operation, word)
        with RemoteDataStoreProxy(url, token) as proxy, pytest.raises(DataStoreError):
            proxy.get("k")
    finally:
        service.unmount(url)


def test_an_unreachable_database_is_a_503_without_its_address_or_credentials(
    service: ServiceThread,
) -> None:
    uri = "mongodb://admin:hunter2@127.0.0.1:9/?serverSelectionTimeoutMS=100&directConnection=true"
    with agent_datastore.connect(uri, ensure_indexes=False) as store:
        url = service.mount_app(_app_over(store))
        token = issue_token(SECRET, "user-1", "agent-a")
        try:
            response = _post(url, "get", {"key": "k"}, token)
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "DataStoreUnavailable"
            for word in ("hunter2", "admin", "127.0.0.1:9", "9"):
                assert word not in response.text, word
            proxy = RemoteDataStoreProxy(url, token)
            with proxy, pytest.raises(DataStoreUnavailable):
                proxy.set("k", 1)
        finally:
            service.unmount(url)


def test_a_token_names_its_scope_but_does_not_carry_the_secret() -> None:
    token = issue_token(SECRET, "user-1", "agent-a", ttl=60)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["agt"]) == ("user-1", "agent-a")
    assert claims["exp"] - claims["iat"] == 60
    assert SECRET not in token
    assert SECRET not in json.dumps(claims)


@pytest.mark.parametrize(
    ("secret", "error"),
    [("short", ValueError), (b"x" * 31, ValueError), (None, TypeError), (42, TypeError)],
)
def test_a_weak_or_missing_secret_is_refused(secret: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        issue_token(secret, "user-1", "agent-a")
    with pytest.raises(error):
        create_app(agent_datastore.connect("mongomock://"), secret)


@pytest.mark.parametrize(
    ("ttl", "error"),
    [(0, ValueError), (-1, ValueError), (8 * 24 * 3600, ValueError), ("60", TypeError)],
)
def test_a_token_lifetime_must_be_positive_and_at_most_seven_days(
    ttl: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        issue_token(SECRET, "user-1", "agent-a", ttl=ttl)
