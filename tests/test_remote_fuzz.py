"""Property-based fuzzing of the store service against its own OpenAPI document, with
schemathesis: valid and invalid bodies for every operation must never get a 5xx (a 503 is
the one deliberate server error), and every answer must match the document: its status, its
content type and its body's schema; a body the document calls invalid must be refused.
Requests without a token, or with a bad one, must be 401 whatever the body.

Runs in process, against the ASGI application in front of an embedded store; seeded and
deterministic, so that CI explores the same cases on every run and a failure found once is
found again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

import agent_datastore
from agent_datastore import issue_token
from agent_datastore.server import create_app, openapi_document

from .service import SECRET

TOKEN = issue_token(SECRET, "fuzz-user", "fuzz-agent")
DOCUMENT = openapi_document()


def _config(max_examples: int, coverage: bool = True, **extra: Any) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 8,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                # no example database under .hypothesis/: a run depends on the seed alone
                "database": "none",
            },
            "checks": {
                # 503 means "the database is unavailable, call again": deliberate, not a crash
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
                # a body or batch over the service's limit is refused with 413, as documented
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 409, 413, 429],
                },
            },
            # operations are independent calls: there are no links for a stateful phase
            "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": coverage}},
            **extra,
        }
    )


class Mount:
    """The ASGI application of the store mounted now: the fixture ``mounted`` opens the
    store, so that importing this module opens none."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # nothing to start or stop: the fixture owns the store
        await self.app(scope, receive, send)


MOUNT = Mount()
# The document is the one the service serves (checked below).
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=_config(40, auth={"openapi": {"token": {"bearer": TOKEN}}})
)
schema.app = MOUNT
# Without configured auth, schemathesis makes up a bearer token of its own for each case. The
# token is refused before the body is read, so the coverage phase's hundreds of boundary
# bodies would test nothing more here.
unauthorized_schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config(8, coverage=False))
unauthorized_schema.app = MOUNT

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    # sends each accepted case again without the token and with a made-up one: both must fail
    ignored_auth,
]


@pytest.fixture(scope="module", autouse=True)
def mounted() -> Iterator[Any]:
    with agent_datastore.connect("mongomock://") as store:
        MOUNT.app = create_app(store, SECRET)
        yield MOUNT.app
        MOUNT.app = None


class Client:
    """Single requests to the application, in process, for the tests of one finding each."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def _send(self, method: str, path: str, body: object = None) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            headers = {"authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://service", headers=headers
            ) as http:
                return await http.request(method, path, json=body)

        return asyncio.run(send())

    def get(self, path: str) -> httpx.Response:
        return self._send("GET", path)

    def post(self, path: str, json: object) -> httpx.Response:
        return self._send("POST", path, json)


@pytest.fixture
def client(mounted: Any) -> Client:
    return Client(mounted)


def _request_schema(operation: str) -> dict[str, Any]:
    post = DOCUMENT["paths"][f"/v1/{operation}"]["post"]
    return post["requestBody"]["content"]["application/json"]["schema"]


def test_the_fuzzed_document_is_the_served_one(client: Client) -> None:
    answer = client.get("/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.json() == DOCUMENT


@schema.parametrize()
def test_operations_answer_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


def _forged(**claims: Any) -> str:
    now = int(time.time())
    standard = {"iss": "agent-datastore", "sub": "fuzz-user", "agt": "fuzz-agent"}
    return jwt.encode({**standard, "iat": now, "exp": now + 600, **claims}, SECRET, "HS256")


def _bad_authorizations() -> list[str | None]:
    header, payload, signature = TOKEN.split(".")
    other = issue_token("another secret that is long enough for HS256", "fuzz-user", "fuzz-agent")
    return [
        None,  # no header at all
        "",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {header}.{payload}.{signature[::-1]}",  # tampered signature
        f"Bearer {header}.{_forged(sub='someone-else').split('.')[1]}.{signature}",
        f"Bearer {other}",  # signed with another secret
        f"Bearer {_forged(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)}",
        f"Bearer {_forged(iss='someone')}",
        f"Bearer {_forged(agt='')}",
        f"Bearer {jwt.encode({'sub': 'fuzz-user'}, None, 'none')}",  # unsigned
        "Bearer not-a-token",
    ]


BAD_AUTHORIZATIONS = _bad_authorizations()


@unauthorized_schema.parametrize()
def test_a_request_without_a_valid_token_is_401(case: schemathesis.Case) -> None:
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    # the made-up token of schemathesis, then each kind of bad token
    answer = case.call_and_validate(checks=checks)
    assert answer.status_code == 401, answer.text
    for authorization in BAD_AUTHORIZATIONS:
        if authorization is None:
            case.headers = {
                name: value
                for name, value in (case.headers or {}).items()
                if name.lower() != "authorization"
            }
            answer = case.call_and_validate(checks=checks)
        else:
            answer = case.call_and_validate(checks=checks, headers={"Authorization": authorization})
        assert answer.status_code == 401, (authorization, answer.text)
        assert answer.json()["error"]["type"] == "TokenRejected"


# ------------------------------------------------------------------ findings of the fuzzer
# The fuzzer found that the service took null in an optional field as an absent field, where
# the document says the field is an integer, a string or an object; for a listing's limit
# that meant a whole namespace in one answer, past the per-request cap. These pin the fix.

NULL_OPTIONAL_FIELDS = [
    ("set", {"key": "k", "value": 1, "if_version": None}),
    ("set", {"key": "k", "value": 1, "ttl_ms": None}),
    ("set", {"key": "k", "value": 1, "metadata": None}),
    ("increment", {"key": "n", "ttl_ms": None}),
    ("delete", {"key": "k", "if_version": None}),
    ("list_keys", {"limit": 1, "prefix": None}),
    ("list_keys", {"limit": 1, "start_after": None}),
    ("list_items", {"limit": 1, "start_after": None}),
    ("set_many", {"items": {"k": 1}, "ttl_ms": None}),
    ("set_many", {"items": {"k": 1}, "metadata": None}),
]


@pytest.mark.parametrize(("operation", "body"), NULL_OPTIONAL_FIELDS)
def test_null_in_an_optional_field_is_refused(
    client: Client, operation: str, body: dict[str, Any]
) -> None:
    answer = client.post(f"/v1/{operation}", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "TypeError"


@pytest.mark.parametrize("operation", ["list_keys", "list_items"])
def test_a_listing_with_a_null_limit_is_refused(client: Client, operation: str) -> None:
    # the document requires an integer from 1 to KEY_PAGE_SIZE, the most one answer holds
    answer = client.post(f"/v1/{operation}", json={"namespace": "cap", "limit": None})
    assert answer.status_code == 400


def test_a_stored_null_is_still_a_value(client: Client) -> None:
    assert client.post("/v1/set", json={"key": "nothing", "value": None}).status_code == 200
    answer = client.post("/v1/get", json={"key": "nothing"})
    assert answer.json() == {"result": {"found": True, "value": None}}
