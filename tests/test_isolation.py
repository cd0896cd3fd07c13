"""A proxy never reads, lists, changes or deletes data outside its user, agent and namespace,
whatever strings it is given."""

from __future__ import annotations

import itertools
import uuid

import pytest
from pymongo import MongoClient

from agent_datastore import AgentDataStoreProxy, DataStore, VersionConflict

from .helpers import MONGODB_URI, REAL_SERVER_SKIP, documents, snapshot

# Names chosen to collide with each other under any sloppy matching: prefixes, regex syntax,
# NUL, case, Unicode look-alikes, operators as plain strings.
HOSTILE = ["u", "u ", "U", "u\x00", "u.*", ".*", "^u", "u$", "$ne", "[u]", "ｕ", "u/", "u:x"]
SCOPES = [
    ("alice", "agent", "default"),
    ("alice", "agent", "other"),
    ("alice", "other-agent", "default"),
    ("bob", "agent", "default"),
    ("alice", "agent", "default\x00"),
    ("alice", "agent", "default "),
    ("alice", "agent", "defaul"),
    ("alice", "agent", ".*"),
    ("alice", "agent.*", "default"),
    ("alice.*", "agent", "default"),
    ("alice\x00", "agent", "default"),
    ("ALICE", "agent", "default"),
]


@pytest.fixture
def proxies(store: DataStore) -> dict[tuple[str, str, str], AgentDataStoreProxy]:
    result = {}
    for scope in SCOPES:
        proxy = store.proxy(*scope)
        proxy.set_many({"shared": list(scope), f"own:{scope}": 1, "common:x": scope[2]})
        result[scope] = proxy
    return result


def _contents(proxy: AgentDataStoreProxy) -> dict[str, object]:
    return proxy.get_many(proxy.list_keys())


def test_each_proxy_sees_only_its_own_items(
    proxies: dict[tuple[str, str, str], AgentDataStoreProxy],
) -> None:
    for scope, proxy in proxies.items():
        assert proxy.get("shared") == list(scope)
        assert proxy.list_keys() == sorted(["shared", f"own:{scope}", "common:x"])
        assert proxy.list_keys(prefix="own:") == [f"own:{scope}"]
        assert proxy.get_many(["shared", "common:x"]) == {
            "shared": list(scope),
            "common:x": scope[2],
        }
        for other in SCOPES:
            if other != scope:
                assert proxy.get(f"own:{other}") is None
                assert proxy.get_item(f"own:{other}") is None
        assert list(proxy.iter_keys()) == proxy.list_keys()
        assert [info.key for info in proxy.list_items()] == proxy.list_keys()
        assert proxy.list_keys(limit=1, start_after="common:x") == [f"own:{scope}"]


def test_namespaces_are_listed_per_user_and_agent(
    proxies: dict[tuple[str, str, str], AgentDataStoreProxy],
) -> None:
    for (user, agent, _), proxy in proxies.items():
        expected = sorted({ns for u, a, ns in SCOPES if (u, a) == (user, agent)})
        assert proxy.list_namespaces() == expected


@pytest.mark.parametrize("victim", SCOPES[:6])
def test_writes_and_deletes_stay_in_scope(
    proxies: dict[tuple[str, str, str], AgentDataStoreProxy],
    store: DataStore,
    victim: tuple[str, str, str],
) -> None:
    others = {scope: _contents(proxy) for scope, proxy in proxies.items() if scope != victim}
    proxy = proxies[victim]
    proxy.set("shared", "overwritten")
    proxy.set_many({"common:x": "overwritten", "new": 1}, metadata={"m": 1}, ttl=60)
    proxy.set("shared", "again", if_version=2)
    assert proxy.increment("counter", 5) == 5
    assert proxy.delete(f"own:{victim}", if_version=1) is True
    assert proxy.clear() == 4
    for scope, contents in others.items():
        assert _contents(proxies[scope]) == contents
    assert documents(store, userId=victim[0], agentName=victim[1], namespace=victim[2]) == []


ATTACKERS = [pair for pair in itertools.product(HOSTILE, HOSTILE) if pair != ("u", "u")][::7]


@pytest.mark.parametrize(("user", "agent"), ATTACKERS)
def test_hostile_names_never_reach_other_data(store: DataStore, user: str, agent: str) -> None:
    victim = store.proxy("u", "u")
    victim.set_many({"secret": 1, "u": 2})
    before = snapshot(store)
    attacker = store.proxy(user, agent)
    for namespace in [*HOSTILE, "default"]:
        scoped = attacker.use_namespace(namespace)
        assert scoped.get("secret") is None
        assert scoped.get_many(["secret", "u"]) == {}
        assert scoped.list_keys() == []
        assert scoped.list_keys(prefix="s") == []
        assert scoped.list_namespaces() == []
        assert scoped.get_item("secret") is None
        assert list(scoped.iter_keys()) == []
        assert scoped.list_items() == []
        assert scoped.list_keys(start_after="") == []
        assert scoped.delete("secret") is False
        assert scoped.delete("secret", if_version=0) is False
        with pytest.raises(VersionConflict):
            scoped.delete("secret", if_version=1)
        with pytest.raises(VersionConflict):
            scoped.set("secret", "stolen", if_version=1)
        assert scoped.clear() == 0
    assert snapshot(store) == before


def test_keys_that_look_like_operators_are_plain_keys(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"$ne": 1, "$gt": 2, "$regex": 3, "a": 4})
    assert data_store.get("$ne") == 1
    assert data_store.get_many(["$gt", "$regex"]) == {"$gt": 2, "$regex": 3}
    assert data_store.delete("$ne") is True
    assert data_store.list_keys() == ["$gt", "$regex", "a"]


def test_a_case_insensitive_collection_collation_does_not_merge_users() -> None:
    """Only a real server applies collations; the wire tests show every command carries the
    simple collation that makes this hold."""
    if not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    client: MongoClient[dict[str, object]] = MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000)
    database = client["agent_datastore_tests"]
    name = f"collated_{uuid.uuid4().hex}"
    collection = database.create_collection(name, collation={"locale": "en", "strength": 2})
    try:
        store = DataStore(collection)
        lower, upper = store.proxy("alice", "agent"), store.proxy("Alice", "AGENT")
        lower.set_many({"k": "lower", "b": 1, "B": 2, "a": 3})
        upper.set("k", "upper")
        assert lower.get("k") == "lower"
        assert lower.list_keys() == ["B", "a", "b", "k"]
        assert lower.get_many(["b", "B"]) == {"b": 1, "B": 2}
        assert upper.list_keys() == ["k"]
        assert upper.clear() == 1
        assert lower.get("k") == "lower"
    finally:
        collection.drop()
        client.close()
