"""Update pipelines run in Python, for the embedded store.

mongomock-ng accepts update pipelines but gets them wrong where this store depends on them:
a ``$cond`` on a field set by an earlier stage, and ``$$REMOVE``, give results MongoDB would
not. So the embedded adapter runs the pipelines that ``_core`` builds with this evaluator,
which follows MongoDB's documented aggregation semantics for exactly the stages and operators
``_core`` uses, and refuses (``NotImplementedError``) anything else rather than guess.

Semantics kept from MongoDB: a missing field is its own value (``$type`` "missing"), lower
than null in comparisons and dropped when a stage sets a field to it; ``$$REMOVE`` is missing;
values of different BSON types compare by the BSON type order; false, null, missing and
numeric zero are false, everything else true; ``$add`` of 64-bit integers that overflows gives
a double.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo.errors import OperationFailure

__all__ = ["MISSING", "bson_type", "evaluate", "run_pipeline"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)


def bson_type(value: Any) -> str:
    """What ``$type`` returns for ``value``."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int" if value in _INT32 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, bytes):
        return "binData"
    raise NotImplementedError(f"no BSON type for {type(value).__name__}")


# The BSON comparison order of the types the store's pipelines compare.
_TYPE_ORDER = {
    "missing": 0,
    "null": 1,
    "int": 2,
    "long": 2,
    "double": 2,
    "string": 3,
    "object": 4,
    "array": 5,
    "binData": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
}


def _compare(left: Any, right: Any) -> int:
    left_rank, right_rank = _TYPE_ORDER[bson_type(left)], _TYPE_ORDER[bson_type(right)]
    if left_rank != right_rank:
        return -1 if left_rank < right_rank else 1
    if left_rank in (0, 1):
        return 0
    if left_rank in (4, 5):
        if left == right:
            return 0
        raise NotImplementedError("ordering of documents or arrays")
    if left_rank == 9:  # BSON dates are instants in UTC: a naive one (as read) is UTC
        left, right = _instant(left), _instant(right)
    return -1 if left < right else (1 if left > right else 0)


def _instant(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _truthy(value: Any) -> bool:
    if value is MISSING or value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    return True


def _field(document: Any, path: str) -> Any:
    for name in path.split("."):
        if isinstance(document, (list, tuple)):
            raise NotImplementedError("field paths through arrays")
        if not isinstance(document, Mapping) or name not in document:
            return MISSING
        document = document[name]
    return document


def _add(values: list[Any]) -> Any:
    if any(value is MISSING or value is None for value in values):
        return None
    dates = [value for value in values if isinstance(value, datetime)]
    if dates:
        # a date and numbers of milliseconds (refresh_expiry's now + a stored length)
        if len(dates) > 1:
            raise OperationFailure("only one date allowed in an $add expression", code=16612)
        numbers = [value for value in values if not isinstance(value, datetime)]
        total = _add(numbers) if numbers else 0
        # the server rounds a fractional total half away from zero (llround)
        whole = math.floor(abs(total) + 0.5) * (1 if total >= 0 else -1)
        return dates[0] + timedelta(milliseconds=whole)
    if not all(bson_type(value) in ("int", "long", "double") for value in values):
        # what the server answers (code 16554) for, say, a version stored as a string
        raise OperationFailure("$add only supports numeric or date types", code=16554)
    total = sum(values)
    if isinstance(total, int) and total not in _INT64:
        return float(total)
    return total


def _arguments(operand: Any, count: int | None = None) -> list[Any]:
    arguments = list(operand) if isinstance(operand, list) else [operand]
    if count is not None and len(arguments) != count:
        raise ValueError(f"expected {count} arguments, got {len(arguments)}")
    return arguments


_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "$eq": lambda order: order == 0,
    "$ne": lambda order: order != 0,
    "$lt": lambda order: order < 0,
    "$lte": lambda order: order <= 0,
    "$gt": lambda order: order > 0,
    "$gte": lambda order: order >= 0,
}


def evaluate(expression: Any, document: Mapping[str, Any]) -> Any:
    """The value of an aggregation expression over ``document``."""
    if isinstance(expression, str):
        if expression == "$$REMOVE":
            return MISSING
        if expression.startswith("$$"):
            raise NotImplementedError(f"variable {expression}")
        if expression.startswith("$"):
            return _field(document, expression[1:])
        return expression
    if isinstance(expression, list):
        values = [evaluate(element, document) for element in expression]
        return [None if value is MISSING else value for value in values]
    if not isinstance(expression, Mapping):
        return expression
    if len(expression) == 1:
        operator, operand = next(iter(expression.items()))
        if operator.startswith("$"):
            return _operator(operator, operand, document)
    result = {}
    for name, sub_expression in expression.items():
        value = evaluate(sub_expression, document)
        if value is not MISSING:
            result[name] = value
    return result


def _operator(operator: str, operand: Any, document: Mapping[str, Any]) -> Any:
    if operator == "$literal":
        return copy.deepcopy(operand)  # the result may be changed by later stages
    if operator == "$cond":
        condition, when_true, when_false = (
            (operand["if"], operand["then"], operand["else"])
            if isinstance(operand, Mapping)
            else _arguments(operand, 3)
        )
        chosen = when_true if _truthy(evaluate(condition, document)) else when_false
        return evaluate(chosen, document)
    if operator == "$and":
        return all(_truthy(evaluate(e, document)) for e in _arguments(operand))
    if operator == "$or":
        return any(_truthy(evaluate(e, document)) for e in _arguments(operand))
    if operator == "$not":
        return not _truthy(evaluate(_arguments(operand, 1)[0], document))
    if operator in _COMPARISONS:
        left, right = (evaluate(e, document) for e in _arguments(operand, 2))
        return _COMPARISONS[operator](_compare(left, right))
    if operator == "$type":
        return bson_type(evaluate(_arguments(operand, 1)[0], document))
    if operator == "$in":
        needle, haystack = (evaluate(e, document) for e in _arguments(operand, 2))
        if not isinstance(haystack, list):
            raise ValueError("$in needs an array")
        return any(_compare(needle, element) == 0 for element in haystack)
    if operator == "$ifNull":
        *candidates, replacement = _arguments(operand)
        for candidate in candidates:
            value = evaluate(candidate, document)
            if value is not MISSING and value is not None:
                return value
        return evaluate(replacement, document)
    if operator == "$add":
        return _add([evaluate(e, document) for e in _arguments(operand)])
    raise NotImplementedError(f"operator {operator}")


def _assign(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for name in parents:
        child = document.get(name)
        if isinstance(child, (list, tuple)):
            raise NotImplementedError("setting a path through an array")
        if not isinstance(child, dict):
            child = document[name] = {}
        document = child
    if value is MISSING:
        document.pop(last, None)
    else:
        document[last] = value


def run_pipeline(document: Mapping[str, Any], pipeline: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``document`` after an update pipeline of ``$set`` and ``$unset`` stages; ``document``
    itself is left as it was."""
    current = copy.deepcopy(dict(document))
    for stage in pipeline:
        (name, specification), *rest = stage.items()
        if rest:
            raise ValueError("a stage has exactly one field")
        if name in ("$set", "$addFields"):
            # every expression of a stage sees the document as the stage received it
            values = [(path, evaluate(e, current)) for path, e in specification.items()]
            for path, value in values:
                _assign(current, path, value)
        elif name == "$unset":
            for path in [specification] if isinstance(specification, str) else specification:
                _assign(current, path, MISSING)
        else:
            raise NotImplementedError(f"stage {name}")
    return current
