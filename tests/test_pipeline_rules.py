"""The write rules are written twice: as update pipelines the server runs, and in Python,
where the proxy replays the server's decision from the document it returns. These tests hold
the two to one another over generated documents, with the pipelines run by the embedded
store's evaluator, and check that evaluator against MongoDB's documented semantics."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson.int64 import Int64
from hypothesis import given
from hypothesis import strategies as st
from mongomock_ng.filtering import filter_applies
from pymongo.errors import OperationFailure

from agent_datastore import _core
from agent_datastore._pipeline import MISSING, bson_type, evaluate, run_pipeline

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SCOPE = _core.Scope("u", "a", "ns")
FILTER = SCOPE.item_filter("k")

moments = st.sampled_from(
    [NOW - timedelta(days=1), NOW - timedelta(milliseconds=1), NOW, NOW + timedelta(seconds=1)]
)
stored_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**63 - 1, -(2**63), 0, 1.5, 3.0, True, None, "7", [1], {"n": 1}]),
    st.just({"__ads__": "int", "digits": str(2**70)}),
)


@st.composite
def stored_documents(draw: st.DrawFn) -> dict[str, Any] | None:
    """A document as a write may find it: absent, live, expired, or old and partial."""
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    document: dict[str, Any] = {**FILTER, "value": draw(stored_values), "updatedAt": NOW}
    document["metadata"] = draw(st.sampled_from([{}, {"a": 1}, {"a": 1, "b": [2]}]))
    if draw(st.integers(0, 9)):  # rarely, a document without createdAt counts as absent
        document["createdAt"] = NOW - timedelta(days=2)
    version = draw(st.sampled_from([None, 1, 2, 3, 7]))
    if version is not None:  # items written before versions existed have none
        document["version"] = version
    expiry = draw(st.sampled_from(["none", "null", "date", "text"]))
    if expiry == "null":
        document["expiresAt"] = None
    elif expiry == "date":
        document["expiresAt"] = draw(moments)
    elif expiry == "text":  # not a date: MongoDB's TTL monitor ignores it, and so does the store
        document["expiresAt"] = "2000-01-01"
    return document


def run_write(before: dict[str, Any] | None, write: _core.Write) -> dict[str, Any] | None:
    """The document after ``write``, as MongoDB makes it: an upsert that finds nothing starts
    from the filter's equalities."""
    if before is None:
        return run_pipeline(write.filter, write.pipeline) if write.upsert else None
    return run_pipeline(before, write.pipeline)


@given(
    before=stored_documents(),
    if_version=st.sampled_from([None, 0, 1, 2, 3]),
    ttl=st.sampled_from([None, timedelta(seconds=30)]),
    metadata=st.sampled_from([{}, {"b": "$x"}, {"c": {"$literal": 1}}]),
)
def test_set_pipeline_does_what_the_python_rules_say(
    before: dict[str, Any] | None,
    if_version: int | None,
    ttl: timedelta | None,
    metadata: dict[str, Any],
) -> None:
    checked = _core.check_metadata(metadata)
    write = SCOPE.set_write("k", "new", checked, NOW, ttl=ttl, if_version=if_version)
    after = run_write(before, write)
    conflict = None if if_version is None else _core.set_conflict(before, NOW, if_version)
    if conflict is not None:
        assert after == before  # nothing changed
        return
    assert after is not None
    live = _core.is_live(before, NOW)
    assert before is not None or not live
    old_metadata = before["metadata"] if live and before else {}
    new_metadata = {path.removeprefix("metadata."): value for path, value in checked[0].items()}
    assert after == {
        **FILTER,
        "value": "new",
        "metadata": {**old_metadata, **new_metadata},
        "createdAt": before["createdAt"] if live and before else NOW,
        "updatedAt": NOW,
        "version": _core.version_of(before) + 1 if live and before else 1,
        **({} if ttl is None else {"expiresAt": NOW + ttl}),
        **({"_id": before["_id"]} if before and "_id" in before else {}),
    }


@given(
    before=stored_documents(),
    amount=st.sampled_from([1, -1, 5, 0, 2**62]),
    ttl=st.sampled_from([None, timedelta(seconds=30)]),
)
def test_increment_pipeline_does_what_the_python_rules_say(
    before: dict[str, Any] | None, amount: int, ttl: timedelta | None
) -> None:
    write = SCOPE.increment_write("k", amount, NOW, ttl)
    after = run_write(before, write)
    assert after is not None
    try:
        expected = _core.increment_result("k", before, NOW, amount)
    except (TypeError, ValueError):
        assert after == before
        return
    assert after["value"] == expected
    assert bson_type(after["value"]) in ("int", "long")
    live = _core.is_live(before, NOW)
    assert after["version"] == (_core.version_of(before) + 1 if live and before else 1)
    if live and before is not None:
        assert after["metadata"] == before["metadata"]
        assert after.get("expiresAt", MISSING) == before.get("expiresAt", MISSING)
    else:
        assert after["metadata"] == {}
        assert after.get("expiresAt") == (None if ttl is None else NOW + ttl)
    assert not any(name.startswith("__ads_") for name in after)


@given(before=stored_documents())
def test_the_query_and_the_python_rule_agree_on_liveness(before: dict[str, Any] | None) -> None:
    """``live_query`` run by mongomock-ng's query matcher (whose type bracketing of ``$lte``
    follows MongoDB's) against ``is_live``, for every document that exists."""
    if before is None or "createdAt" not in before:
        return  # a write's notion of "absent"; reads only ever see existing documents
    assert filter_applies(_core.live_query(NOW), before) == _core.is_live(before, NOW)


def test_the_scope_filters_are_the_namespace_the_key_and_live_query() -> None:
    """The filters are written out as literals for speed; they must stay exactly (fields and
    their order, which the command bytes follow) the scope, the key and ``live_query``."""
    scope = _core.Scope("user", "agent", "space")
    base = {"userId": "user", "agentName": "agent", "namespace": "space"}
    live = _core.live_query(NOW)
    expected = {
        "item": {**base, "key": "k"},
        "live item": {**base, "key": "k", **live},
        "namespace": {**base, **live},
        "many": {**base, "key": {"$in": ["a", "b"]}, **live},
    }
    built = {
        "item": scope.item_filter("k"),
        "live item": scope.live_item_filter("k", NOW),
        "namespace": scope.live_namespace_filter(NOW),
        "many": scope.many_filter(["a", "b"], NOW),
    }
    for name, query in built.items():
        assert list(query.items()) == list(expected[name].items()), name


def test_the_clock_reads_whole_milliseconds_in_utc() -> None:
    before = datetime.now(timezone.utc) - timedelta(milliseconds=1)
    now = _core.utc_now()
    after = datetime.now(timezone.utc)
    assert now.tzinfo is timezone.utc
    assert now.microsecond % 1000 == 0
    assert before <= now <= after


# ------------------------------------------------- the evaluator, against MongoDB's manual


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"$type": "$nothing"}, "missing"),
        ({"$type": "$null"}, "null"),
        ({"$type": "$small"}, "int"),
        ({"$type": "$big"}, "long"),
        ({"$type": {"$literal": Int64(1)}}, "long"),
        ({"$type": "$when"}, "date"),
        ({"$ifNull": ["$nothing", "$null", 5]}, 5),
        ({"$lt": ["$nothing", "$null"]}, True),  # missing sorts before null
        ({"$lt": ["$big", "text"]}, True),  # numbers sort before strings
        ({"$lt": ["text", "$when"]}, True),  # strings before dates
        ({"$eq": [1, 1.0]}, True),
        ({"$add": ["$big", "$big"]}, float(2 * (2**62))),  # an overflowing long becomes a double
        ({"$add": ["$small", "$nothing"]}, None),
        ({"$cond": [0, "yes", "no"]}, "no"),  # zero is false
        ({"$cond": ["", "yes", "no"]}, "yes"),  # an empty string is true
        ({"$cond": ["$nothing", "yes", "no"]}, "no"),
        ({"$literal": "$small"}, "$small"),
        ({"$in": [{"$type": "$small"}, ["int", "long"]]}, True),
        ({"a": "$nothing", "b": 1}, {"b": 1}),  # a missing value leaves the field out
    ],
)
def test_the_evaluator_follows_mongodb(expression: Any, expected: Any) -> None:
    document = {"null": None, "small": 3, "big": 2**62, "when": NOW}
    result = evaluate(expression, document)
    assert result == expected
    assert type(result) is type(expected)


def test_a_stage_sees_its_input_and_remove_drops_a_field() -> None:
    after = run_pipeline(
        {"a": 1, "b": 2, "m": {"x": 1}},
        [
            {"$set": {"a": 10, "c": "$a", "b": "$$REMOVE", "m.y": {"$literal": [1]}}},
            {"$unset": ["c"]},
        ],
    )
    assert after == {"a": 10, "m": {"x": 1, "y": [1]}}


def test_adding_to_something_not_a_number_fails_as_on_the_server() -> None:
    with pytest.raises(OperationFailure) as caught:
        evaluate({"$add": ["$version", 1]}, {"version": "3"})
    assert caught.value.code == 16554


@pytest.mark.parametrize(
    "expression",
    [{"$concat": ["a", "b"]}, "$$NOW", {"$lt": [{"a": 1}, {"a": 2}]}],
)
def test_the_evaluator_refuses_what_it_does_not_know(expression: Any) -> None:
    with pytest.raises(NotImplementedError):
        evaluate(expression, {})


@pytest.mark.parametrize(
    ("milliseconds", "expected"),
    [(60_000, 60_000), (Int64(5), 5), (1.5, 2), (2.5, 3), (-1.5, -2), (0.4, 0)],
)
def test_a_date_plus_milliseconds_rounds_half_away_from_zero_as_the_server_does(
    milliseconds: Any, expected: int
) -> None:
    # refresh_expiry's $add of now and a stored length (DoubleDoubleSummation::getLong)
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    document = {"length": milliseconds}
    after = run_pipeline(document, [{"$set": {"at": {"$add": [moment, "$length"]}}}])
    assert after["at"] == moment + timedelta(milliseconds=expected)


def test_only_one_date_may_be_added() -> None:
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(OperationFailure, match="only one date"):
        run_pipeline({}, [{"$set": {"at": {"$add": [moment, moment]}}}])
