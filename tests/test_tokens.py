"""The rules of a token, each refused with 401 through the service; one spelling per token,
so that a respelled token never gets a rate limit of its own; the optional audience; and the
verifier's cache, which never accepts what a full verification would refuse."""

from __future__ import annotations

import base64
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner

import agent_datastore
from agent_datastore import RemoteDataStoreProxy, TokenRejected, _tokens, issue_token
from agent_datastore._tokens import (
    CLOCK_LEEWAY_SECONDS,
    MAX_TOKEN_ID_CHARS,
    VERIFIED_CACHE_SIZE,
    verify_token,
)
from agent_datastore.cli import cli
from agent_datastore.server import create_app

from .helpers import snapshot
from .service import SECRET, RemoteStore, ServiceThread

SEVEN_DAYS = 7 * 24 * 3600
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def remote(service: ServiceThread) -> Iterator[RemoteStore]:
    with RemoteStore(service, agent_datastore.connect("mongomock://")) as store:
        store.proxy("user-1", "agent-a").set("k", "user-1's")
        yield store


def _claims(**changes: Any) -> dict[str, Any]:
    """Claims as issue_token writes them, with ``changes``; a change to None drops the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "agent-datastore", "sub": "user-1", "agt": "agent-a"}
    claims.update(iat=now, exp=now + 600, jti=secrets.token_urlsafe(12))
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _signed(algorithm: str = "HS256", key: str | None = SECRET, **changes: Any) -> str:
    with warnings.catch_warnings():  # PyJWT warns that the test secret is short for HS512
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(_claims(**changes), key, algorithm=algorithm)


def _post(url: str, token: str, operation: str = "get", body: Any = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/{operation}",
        json={"key": "k"} if body is None else body,
        headers={"authorization": f"Bearer {token}"},
    )


def _now() -> int:
    return int(time.time())


# name: (token, a word of the refusal's message, which says the check that failed)
REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    # "none" leaves the signature empty: not three segments
    "unsigned (alg none)": (lambda: _signed("none", key=None), "base64url segments"),
    "HS512 with the right secret": (lambda: _signed("HS512"), "not valid"),
    "HS384 with the right secret": (lambda: _signed("HS384"), "not valid"),
    "iat a numeric string": (lambda: _signed(iat=str(_now())), "'iat' claim must be an integer"),
    "exp a numeric string": (
        lambda: _signed(exp=str(_now() + 600)),
        "'exp' claim must be an integer",
    ),
    "iat a bool": (lambda: _signed(iat=True), "'iat' claim must be an integer"),
    "exp a float": (lambda: _signed(exp=_now() + 600.5), "'exp' claim must be an integer"),
    "nbf a string": (lambda: _signed(nbf="0"), "'nbf' claim must be an integer"),
    "iat negative": (lambda: _signed(iat=-100, exp=500), "'iat' claim is negative"),
    "iat beyond the leeway in the future": (
        lambda: _signed(iat=_now() + CLOCK_LEEWAY_SECONDS + 60, exp=_now() + 600),
        "issued in the future",
    ),
    "nbf in the future": (lambda: _signed(nbf=_now() + 300), "not valid yet"),
    "exp equal to iat": (lambda: _signed(iat=_now(), exp=_now()), "expires before"),
    "a lifetime one second over 7 days": (
        lambda: _signed(iat=_now(), exp=_now() + SEVEN_DAYS + 1),
        "over the limit of 7 days",
    ),
    "expired": (lambda: _signed(iat=_now() - 700, exp=_now() - 100), "expired"),
    "no jti": (lambda: _signed(jti=None), "no 'jti' claim"),
    "an empty jti": (lambda: _signed(jti=""), "'jti' claim must be a non-empty string"),
    "a jti that is a number": (lambda: _signed(jti=7), "'jti' claim must be a non-empty string"),
    "a jti over the length limit": (
        lambda: _signed(jti="j" * (MAX_TOKEN_ID_CHARS + 1)),
        "'jti' claim must be a non-empty string",
    ),
    "no iat": (lambda: _signed(iat=None), "no 'iat' claim"),
    "no issuer": (lambda: _signed(iss=None), "no 'iss' claim"),
    "no user": (lambda: _signed(sub=None), "no 'sub' claim"),
    "an audience, at a service without one": (
        lambda: _signed(aud="store-eu"),
        "names an audience",
    ),
}


@pytest.mark.parametrize(("make_token", "reason"), REFUSED.values(), ids=list(REFUSED))
def test_every_rule_of_a_token_is_enforced_by_the_service(
    remote: RemoteStore, make_token: Callable[[], str], reason: str
) -> None:
    before = snapshot(remote.backend)
    for operation, body in [("get", {"key": "k"}), ("set", {"key": "k", "value": "mine"})]:
        response = _post(remote.url, make_token(), operation, body)
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert error["type"] == "TokenRejected"
        assert reason in error["message"]
        assert SECRET not in response.text
        assert "user-1's" not in response.text
    assert snapshot(remote.backend) == before


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iat": 0, "exp": 1}, "expired"),  # at the epoch: not negative, but long expired
        ({"iat": 10**30 - 60, "exp": 10**30}, "in the future"),  # far-off, a minute long
    ],
    ids=["iat at the epoch", "far-off times"],
)
def test_well_formed_times_are_judged_by_the_clock(
    remote: RemoteStore, changes: dict[str, Any], reason: str
) -> None:
    response = _post(remote.url, _signed(**changes))
    assert response.status_code == 401
    assert reason in response.json()["error"]["message"]


ACCEPTED: dict[str, Callable[[], dict[str, Any]]] = {
    # a runtime's clock slightly ahead of the service's
    "iat within the leeway": lambda: {"iat": _now() + CLOCK_LEEWAY_SECONDS - 2},
    "exactly 7 days": lambda: {"exp": _now() + SEVEN_DAYS},
    "exp within the leeway": lambda: {"iat": _now() - 60, "exp": _now() - 5},
    "the longest jti": lambda: {"jti": "j" * MAX_TOKEN_ID_CHARS},
    "an nbf that has passed": lambda: {"nbf": _now() - 5},
}


@pytest.mark.parametrize("changes", ACCEPTED.values(), ids=list(ACCEPTED))
def test_the_rules_accept_what_issue_token_and_clocks_allow(
    remote: RemoteStore, changes: Callable[[], dict[str, Any]]
) -> None:
    response = _post(remote.url, _signed(**changes()))
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"found": True, "value": "user-1's"}


def test_the_token_id_is_the_jti_claim() -> None:
    token = issue_token(SECRET, "user-1", "agent-a")
    claims = jwt.decode(token, options={"verify_signature": False})
    scope = verify_token(SECRET, token)
    assert scope.token_id == claims["jti"]
    assert (scope.user_id, scope.agent_name, scope.expires_at) == (
        "user-1",
        "agent-a",
        claims["exp"],
    )


# ----------------------------------------------------------------------------- spellings


def _token() -> str:
    """A token whose signature has a '-' or '_' (three in four do), so that every respelling
    below changes it."""
    for _ in range(100):
        token = issue_token(SECRET, "user-1", "agent-a")
        if "-" in token.split(".")[2] or "_" in token.split(".")[2]:
            return token
    raise AssertionError("no signature with '-' or '_' in 100 tokens")


def _respell_signature(token: str, respell: Callable[[str], str]) -> str:
    header, payload, signature = token.split(".")
    return ".".join([header, payload, respell(signature)])


def _last_unused_bit_set(signature: str) -> str:
    """The 43 characters of an HS256 signature carry 258 bits for its 256: the lowest bit of
    the last character is dropped by decoding. Set, it spells the same bytes."""
    assert len(signature) % 4 == 3
    return signature[:-1] + BASE64URL[BASE64URL.index(signature[-1]) ^ 1]


RESPELLINGS: dict[str, Callable[[str], str]] = {
    "a trailing =": lambda token: token + "=",
    "two trailing =": lambda token: token + "==",
    # PyJWT before 2.14 skipped these: any number of spellings
    "junk characters in the signature": lambda token: token[:-10] + "!!!!" + token[-10:],
    "spaces in the signature": lambda token: token[:-10] + "    " + token[-10:],
    "the last character's unused bit set": lambda token: _respell_signature(
        token, _last_unused_bit_set
    ),
    "the standard alphabet": lambda token: _respell_signature(
        token, lambda signature: signature.replace("-", "+").replace("_", "/")
    ),
    "padding in the payload": lambda token: "{}.{}=.{}".format(*token.split(".")),
}


def _signature_bytes(token: str) -> bytes:
    signature = token.split(".")[2].rstrip("=")
    return base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))


def test_the_respellings_are_other_texts_of_the_same_signature() -> None:
    token = _token()
    for name in ["a trailing =", "the last character's unused bit set"]:
        respelled = RESPELLINGS[name](token)
        assert respelled != token
        assert _signature_bytes(respelled) == _signature_bytes(token), name


def _accepted_by_pyjwt(token: str) -> bool:
    try:
        jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return False
    return True


@pytest.mark.parametrize("respell", RESPELLINGS.values(), ids=list(RESPELLINGS))
def test_a_respelled_token_is_refused(remote: RemoteStore, respell: Callable[[str], str]) -> None:
    token = _token()
    respelled = respell(token)
    assert respelled != token
    response = _post(remote.url, respelled)
    assert response.status_code == 401, respelled
    assert response.json()["error"]["type"] == "TokenRejected"
    assert _post(remote.url, token).status_code == 200


@pytest.fixture
def limited(service: ServiceThread) -> Iterator[RemoteStore]:
    with RemoteStore(
        service, agent_datastore.connect("mongomock://"), rate_limit=(2, 600)
    ) as store:
        yield store


@pytest.mark.parametrize("respell", RESPELLINGS.values(), ids=list(RESPELLINGS))
@pytest.mark.parametrize("canonical_only", [True, False], ids=["canonical", "any spelling"])
def test_a_respelled_token_never_gets_a_fresh_rate_limit(
    limited: RemoteStore,
    monkeypatch: pytest.MonkeyPatch,
    respell: Callable[[str], str],
    canonical_only: bool,
) -> None:
    """The verifier refuses every other spelling (401). With that check switched off (``any
    spelling``: as if PyJWT alone decided, which takes a trailing '=' since 2.15.1), a
    spelling PyJWT accepts counts against the token's own bucket (429)."""
    if not canonical_only:
        monkeypatch.setattr(_tokens, "_check_canonical", lambda token: None)
    token = _token()
    assert [_post(limited.url, token).status_code for _ in range(2)] == [200, 200]
    assert _post(limited.url, token).status_code == 429
    respelled = respell(token)
    status = _post(limited.url, respelled).status_code
    if canonical_only or not _accepted_by_pyjwt(respelled):
        assert status == 401
    else:
        assert status == 429


# ----------------------------------------------------------------------------- audience


def test_a_token_for_the_services_audience_is_accepted(service: ServiceThread) -> None:
    backend = agent_datastore.connect("mongomock://")
    with RemoteStore(service, backend, audience="store-eu") as store:
        token = issue_token(SECRET, "user-1", "agent-a", audience="store-eu")
        assert jwt.decode(token, options={"verify_signature": False})["aud"] == "store-eu"
        with RemoteDataStoreProxy(store.url, token) as proxy:
            proxy.set("k", {"v": 1})
            assert proxy.get("k") == {"v": 1}
        for other in [
            issue_token(SECRET, "user-1", "agent-a", audience="store-us"),
            issue_token(SECRET, "user-1", "agent-a"),
            _signed(aud=["store-eu", "store-us"]),  # a list, even one that names it
            _signed(aud=""),
        ]:
            response = _post(store.url, other)
            assert response.status_code == 401, response.text
            message = response.json()["error"]["message"]
            assert "audience" in message
            assert "store-eu" not in message


def test_a_service_without_an_audience_refuses_a_token_with_one(remote: RemoteStore) -> None:
    token = issue_token(SECRET, "user-1", "agent-a", audience="store-eu")
    response = _post(remote.url, token)
    assert response.status_code == 401
    assert "names an audience" in response.json()["error"]["message"]


@pytest.mark.parametrize(("audience", "error"), [("", ValueError), (7, TypeError)])
def test_an_audience_is_a_non_empty_string(audience: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="audience"):
        issue_token(SECRET, "user-1", "agent-a", audience=audience)
    with pytest.raises(error, match="audience"):
        verify_token(SECRET, issue_token(SECRET, "user-1", "agent-a"), audience=audience)
    with agent_datastore.connect("mongomock://") as store, pytest.raises(error, match="audience"):
        create_app(store, SECRET, audience=audience)


def test_serve_takes_the_audience_from_its_option_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command passes --audience (else $AGENT_DATASTORE_AUDIENCE) to the application;
    the server itself is replaced by one that only builds the application."""
    passed: list[Any] = []

    def build_only(uri: str, secret: str, **options: Any) -> None:
        app_options = ["max_body_bytes", "max_batch", "rate_limit", "audience"]
        with agent_datastore.connect(uri) as store:
            create_app(store, secret, **{name: options[name] for name in app_options})
        passed.append(options["audience"])

    monkeypatch.setattr("agent_datastore.server.serve", build_only)
    runner = CliRunner()
    environment = {"AGENT_DATASTORE_SECRET": SECRET, "AGENT_DATASTORE_URI": "mongomock://"}
    for arguments, audience_variable in [
        (["--audience", "store-eu"], None),
        ([], "store-us"),
        ([], None),
    ]:
        result = runner.invoke(
            cli,
            ["serve", *arguments],
            env={**environment, "AGENT_DATASTORE_AUDIENCE": audience_variable},
        )
        assert result.exit_code == 0, result.output
    assert passed == ["store-eu", "store-us", None]
    refused = runner.invoke(cli, ["serve", "--audience", ""], env=environment)
    assert refused.exit_code == 2
    assert "audience must not be empty" in refused.output


# ----------------------------------------------------------------------------- the cache


@pytest.fixture
def cache() -> Iterator[Any]:
    _tokens._verified.cache_clear()
    yield _tokens._verified
    _tokens._verified.cache_clear()


def test_the_cache_keeps_only_tokens_that_verified(cache: Any) -> None:
    token = issue_token(SECRET, "user-1", "agent-a")
    first = verify_token(SECRET, token)
    assert verify_token(SECRET, token) == first
    assert (cache.cache_info().hits, cache.cache_info().currsize) == (1, 1)
    for refused in [_signed(jti=None), token + "=", issue_token(SECRET * 2, "user-1", "agent-a")]:
        with pytest.raises(TokenRejected):
            verify_token(SECRET, refused)
    assert cache.cache_info().currsize == 1


def test_a_cached_token_is_refused_with_another_secret_or_audience(cache: Any) -> None:
    token = issue_token(SECRET, "user-1", "agent-a")
    verify_token(SECRET, token)
    with pytest.raises(TokenRejected, match="signature does not match"):
        verify_token(SECRET * 2, token)
    with pytest.raises(TokenRejected, match="names no audience"):
        verify_token(SECRET, token, audience="store-eu")
    for_eu = issue_token(SECRET, "user-1", "agent-a", audience="store-eu")
    verify_token(SECRET, for_eu, audience="store-eu")
    with pytest.raises(TokenRejected, match="another audience"):
        verify_token(SECRET, for_eu, audience="store-us")
    with pytest.raises(TokenRejected, match="names an audience"):
        verify_token(SECRET, for_eu)


def test_a_cached_token_is_refused_once_expired_or_before_it_was_issued(
    cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue_token(SECRET, "user-1", "agent-a", ttl=60)
    issued = jwt.decode(token, options={"verify_signature": False})["iat"]
    verify_token(SECRET, token)
    assert cache.cache_info().currsize == 1
    now = [float(issued + 60 + CLOCK_LEEWAY_SECONDS)]
    monkeypatch.setattr(_tokens.time, "time", lambda: now[0])
    with pytest.raises(TokenRejected, match="expired"):
        verify_token(SECRET, token)
    now[0] = issued - CLOCK_LEEWAY_SECONDS - 1  # the service's clock set back
    with pytest.raises(TokenRejected, match="in the future"):
        verify_token(SECRET, token)
    now[0] = issued + 30
    assert verify_token(SECRET, token).token_id
    assert cache.cache_info().misses == 1  # every check above was of the cached entry


def test_the_cache_is_bounded(cache: Any) -> None:
    key = SECRET.encode()
    claims = _claims()
    for number in range(VERIFIED_CACHE_SIZE + 10):
        token = jwt.encode({**claims, "jti": f"token-{number}"}, key, algorithm="HS256")
        verify_token(key, token)
    assert cache.cache_info().currsize == VERIFIED_CACHE_SIZE
