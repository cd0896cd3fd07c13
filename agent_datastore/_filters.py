"""LangGraph search filters as MongoDB query conditions on an item's stored value.

LangGraph's ``BaseStore.search(namespace_prefix, filter=...)`` filters items by their value
(always a dict in LangGraph). ``value_query`` translates such a filter into one MongoDB query
condition that the caller ANDs with its own (user, agent, namespace, live), so that a search is
one ``find`` on the server. The semantics are those of LangGraph's ``InMemoryStore``
(``langgraph.store.memory``: ``_compare_values`` and ``_apply_operator``), on values stored by
``_codec``; this module imports nothing from LangGraph, so that the store service can translate
the filters it receives with it.

A filter is a dict of field names to conditions. An item matches when its value is a dict
(stored as a plain BSON document, not in a tagged form) and, for every field ``k``, its
``value.get(k)`` (``None`` when absent) satisfies the condition:

- a scalar (``str``, an ``int`` within int64, a finite ``float``, ``bool``, ``None``): the
  field equals it (``None`` also matches an absent field);
- a list (or tuple): the field is a list of the same length whose elements equal the filter's,
  elementwise, lists inside lists compared the same way; dicts inside are refused;
- a dict whose keys are field names: the field is a dict, and each of its fields satisfies the
  condition given for it, recursively (a subset match; ``{}`` matches any dict);
- a dict of operators: all of them hold. ``$eq`` and ``$ne``: the field equals (or does not
  equal) a scalar or list, as above. ``$gt``, ``$gte``, ``$lt``, ``$lte``: the field is a
  number and compares so with the bound, which is converted as Python's ``float()`` would
  (an ``int`` is kept as it is, a ``bool`` is 0 or 1, a string such as ``"2.5"`` is parsed).

Differences from ``InMemoryStore``, each deliberate:

- **bool vs number**: Python has ``True == 1``; BSON never equates a boolean with a number,
  so ``{"a": 1}`` does not match ``{"a": true}``, and ``{"a": {"$ne": 1}}`` does.
- **range over non-numbers**: ``InMemoryStore`` applies ``float()`` to the item's field, so it
  compares booleans and numeric strings as numbers and raises on an absent field, ``None``,
  a list, a dict or any other string. Here a range operator matches numbers only and never
  raises.
- **tagged values**: parts of a value BSON cannot hold as they are (a dict with a key that
  starts with ``$``, contains ``.`` or is empty, an integer beyond int64; see docs/schema.md)
  are stored in a tagged form. A condition never looks inside one: a subset match, an
  equality or a range on such a part does not match (``$ne`` does, as for any other value
  that is not equal), and a value tagged as a whole (a dict with such a key at its top)
  matches no filter.
- **ranges compared exactly**: ``InMemoryStore`` compares ``float(item)`` with ``float(bound)``,
  which rounds integers beyond 2**53; MongoDB compares the stored number with the bound
  exactly.
- **JSON only**: tuples are lists; a filter holding anything but JSON values, a field name
  that is not plain, an unknown operator, a dict mixing operators with field names, a dict
  under ``$eq``/``$ne`` or inside a list, NaN, an infinity or an integer beyond int64 is refused
  with ``TypeError`` or ``ValueError`` whatever the items (``InMemoryStore`` raises for some of
  these only when an item reaches them, and compares the rest as Python objects), as is one
  past ``MAX_FILTER_CONDITIONS``, ``MAX_FILTER_DEPTH`` or ``MAX_FILTER_BYTES``.
- **not a dict**: a value that is not a dict (which LangGraph never stores, but another
  client of the store may) matches no filter but an empty one.

The translation, for a field path ``p`` (``value.k``, ``value.k.k2``, ...):

- every filter: ``value`` is a document, not an array, without the tag field;
- subset match: ``p`` the same, then a condition per field, on ``p.<field>``; every parent of a
  path is so guarded, so no path ever runs through an array (where MongoDB would look into
  each element) or into a tagged part;
- scalar equality: ``{p: {$eq: v, $not: {$type: "array"}}}``: the guard keeps MongoDB from
  matching a list that merely holds ``v``; ``$eq: null`` also matches an absent field, as
  ``None`` does in Python. ``$ne``: ``{$nor: [<that>]}``;
- list equality: ``{$expr: {$eq: ["$p", {$literal: [...]}]}}`` (or ``$ne``): the aggregation
  comparison of whole arrays, element by element, which the query language does not offer
  (its ``$eq`` on an array also matches an array holding it); ``$literal`` keeps a string
  such as ``"$x"`` from being read as a field path;
- range: ``{p: {$gt: v, $not: {$type: "array"}}}``: with a numeric bound MongoDB's comparison
  operators match numbers only (type bracketing), and the guard keeps them from matching a
  list holding such a number.
"""

from __future__ import annotations

import math
from typing import Any

from ._codec import TAG, _is_plain_name

__all__ = [
    "EQUALITY_OPERATORS",
    "MAX_FILTER_BYTES",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_DEPTH",
    "RANGE_OPERATORS",
    "value_query",
]

EQUALITY_OPERATORS = ("$eq", "$ne")
RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
_OPERATORS = frozenset(EQUALITY_OPERATORS + RANGE_OPERATORS)

# Bounds on one filter, so that a caller of the store service cannot make one query expensive
# to build (each is checked as the filter is walked, before the part past it is looked at) or
# to run (the server evaluates every condition on every document of the namespace prefix).
# Filters that agents write name a handful of fields; the bounds are far above that and still
# keep a query small.
# Conditions: every field name and every operator, in all the filter's dicts. Each becomes one
# clause (a subset match two more, for its guards), so a query holds at most about 300 clauses.
MAX_FILTER_CONDITIONS = 100
# Depth: dicts and lists nested in one another, the filter itself being level 1. Past a few
# levels no document shape needs more; 20 keeps the generated paths short, leaves the
# translation (a few Python frames a level) far from the recursion limit, and stops a cyclic
# filter at once.
MAX_FILTER_DEPTH = 20
# Size of the query built: for each clause, the UTF-8 bytes of its field path; for each value
# compared, the UTF-8 bytes of a string and 8 for anything else. A field path is repeated in
# every clause below it, so this bounds the query's own size (far below MongoDB's 16 MiB
# command) and the work of comparing it with each document, while leaving room to compare a
# field with a long text.
MAX_FILTER_BYTES = 64 * 1024

_VALUE_FIELD = "value"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_WORD_SIZE = 8  # what a number, bool, null, list or dict costs in MAX_FILTER_BYTES

Where = tuple[object, ...]


def value_query(filter: object) -> dict[str, Any]:
    """The MongoDB query condition on the stored ``value`` of an item that LangGraph's
    ``filter`` matches (see the module's docstring for what matches, and where it differs
    from ``InMemoryStore``): ``{"$and": [...]}``, to be ANDed with the caller's conditions,
    or ``{}`` for a filter that is ``None`` or empty, which matches every item.

    Raises ``TypeError`` for a filter that is not a dict or holds something other than JSON
    (a key that is not a string included), and ``ValueError`` for one that cannot be
    translated faithfully or passes ``MAX_FILTER_CONDITIONS``, ``MAX_FILTER_DEPTH`` or
    ``MAX_FILTER_BYTES``; both name the offending part, as in ``filter['a']['$gt']``.
    """
    if filter is None:
        return {}
    if not isinstance(filter, dict):
        raise TypeError(f"a search filter must be a dict or None, not {type(filter).__name__}")
    if not filter:
        return {}
    translation = _Translation()
    translation.open_dict(filter, (), 1)
    translation.fields(_VALUE_FIELD, filter, (), 1)
    return {"$and": translation.clauses}


def _spell(where: Where) -> str:
    return "filter" + "".join(f"[{part!r}]" for part in where)


def _array_type() -> dict[str, Any]:
    # a new dict for each clause: the caller may change the query it is given
    return {"$type": "array"}


def _why_not_a_field(name: str) -> str:
    # Such a name could become an operator or a path in the query; and a stored dict with it is
    # in a tagged form, where no filter could find it.
    if name.startswith("$"):
        if name in _OPERATORS:
            return f"{name!r} is an operator, and a filter's own keys are field names"
        return f"{name!r} starts with '$': a filter's field names cannot"
    if name == TAG:
        return f"{name!r} is reserved for the stored form of values (docs/schema.md)"
    if not name:
        return "a filter's field names cannot be empty"
    if "." in name:
        return f"{name!r} holds '.': a filter's field names cannot (nest dicts instead)"
    return f"{name!r} holds NUL: a filter's field names cannot"


class _Translation:
    """One filter's clauses, built as the filter is walked, with what its bounds have left."""

    def __init__(self) -> None:
        self.clauses: list[dict[str, Any]] = []
        self.conditions_left = MAX_FILTER_CONDITIONS
        self.bytes_left = MAX_FILTER_BYTES

    # -- bounds

    def enter(self, depth: int, where: Where) -> None:
        if depth > MAX_FILTER_DEPTH:
            raise ValueError(
                f"{_spell(where)} nests too deeply: a search filter may nest at most "
                f"{MAX_FILTER_DEPTH} dicts and lists"
            )

    def count(self, conditions: int, where: Where) -> None:
        self.conditions_left -= conditions
        if self.conditions_left < 0:
            raise ValueError(
                f"{_spell(where)}: a search filter may hold at most {MAX_FILTER_CONDITIONS} "
                "field names and operators in all"
            )

    def charge(self, size: int, where: Where) -> None:
        self.bytes_left -= size
        if self.bytes_left < 0:
            raise ValueError(
                f"{_spell(where)}: the search filter is too large (its query would pass "
                f"{MAX_FILTER_BYTES} bytes of field paths and values)"
            )

    def text_size(self, text: str, where: Where) -> int:
        if len(text) > self.bytes_left:  # at least that many bytes: refused before encoding
            self.charge(len(text), where)
        try:
            return len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{_spell(where)}: string is not valid Unicode (lone surrogate at {exc.start})"
            ) from None

    def add(self, path: str, clause: dict[str, Any], where: Where) -> None:
        self.charge(self.text_size(path, where), where)
        self.clauses.append(clause)

    # -- the filter's parts

    def open_dict(self, conditions: dict[Any, Any], where: Where, depth: int) -> None:
        """Counts a dict of field names or operators, before walking it, whatever its size."""
        self.enter(depth, where)
        self.count(len(conditions), where)

    def fields(self, path: str, fields: dict[Any, Any], where: Where, depth: int) -> None:
        """A subset match: ``path`` is a plain document, and each field matches its filter."""
        self.add(path, {path: {"$type": "object", "$not": _array_type()}}, where)
        tag_path = f"{path}.{TAG}"
        self.add(tag_path, {tag_path: {"$exists": False}}, where)
        for name, condition in fields.items():
            at = (*where, name)
            if not isinstance(name, str):
                raise TypeError(
                    f"{_spell(at)}: search filter keys must be str, not {type(name).__name__}"
                )
            self.text_size(name, at)  # lone surrogates
            if not _is_plain_name(name):
                raise ValueError(f"{_spell(at)}: {_why_not_a_field(name)}")
            self.condition(f"{path}.{name}", condition, at, depth + 1)

    def condition(self, path: str, condition: Any, where: Where, depth: int) -> None:
        if isinstance(condition, dict):
            self.open_dict(condition, where, depth)
            # InMemoryStore reads a dict as operators as soon as one key starts with "$"
            if any(isinstance(key, str) and key.startswith("$") for key in condition):
                self.operators(path, condition, where, depth)
            else:
                self.fields(path, condition, where, depth)
        else:
            self.equality(path, "$eq", condition, where, depth)

    def operators(self, path: str, operators: dict[Any, Any], where: Where, depth: int) -> None:
        for operator, operand in operators.items():
            at = (*where, operator)
            if not isinstance(operator, str):
                raise TypeError(
                    f"{_spell(at)}: search filter keys must be str, not {type(operator).__name__}"
                )
            if operator in RANGE_OPERATORS:
                self.range(path, operator, operand, at)
            elif operator in EQUALITY_OPERATORS:
                self.equality(path, operator, operand, at, depth + 1)
            elif operator.startswith("$"):
                raise ValueError(
                    f"{_spell(at)}: unsupported operator {operator!r}; a search filter knows "
                    f"{', '.join(EQUALITY_OPERATORS + RANGE_OPERATORS)}"
                )
            else:
                raise ValueError(
                    f"{_spell(at)}: a dict of operators cannot also hold the field name "
                    f"{operator!r}"
                )

    def equality(self, path: str, operator: str, operand: Any, where: Where, depth: int) -> None:
        if isinstance(operand, dict):
            raise ValueError(
                f"{_spell(where)}: a dict cannot be compared whole with {operator}: LangGraph "
                "compares dicts whatever the order of their keys, MongoDB in stored order; "
                "give a condition for each of its fields instead"
            )
        if isinstance(operand, (list, tuple)):
            literal = self.array(operand, where, depth)
            expression = {operator: [f"${path}", {"$literal": literal}]}
            self.add(path, {"$expr": expression}, where)
            return
        equal = {path: {"$eq": self.scalar(operand, where), "$not": _array_type()}}
        self.add(path, equal if operator == "$eq" else {"$nor": [equal]}, where)

    def range(self, path: str, operator: str, operand: Any, where: Where) -> None:
        bound: int | float
        if isinstance(operand, bool):
            bound = int(operand)
        elif isinstance(operand, int):
            bound = self.scalar(operand, where)
        elif isinstance(operand, float):
            bound = float.__float__(operand)
        elif isinstance(operand, str):
            self.charge(self.text_size(operand, where), where)
            try:
                bound = float(operand)
            except ValueError:
                raise ValueError(
                    f"{_spell(where)}: {operator} needs a number, and {operand!r} is not one"
                ) from None
        else:
            raise TypeError(
                f"{_spell(where)}: {operator} needs a number, not {type(operand).__name__}"
            )
        if isinstance(bound, float) and not math.isfinite(bound):
            raise ValueError(f"{_spell(where)}: {operator} needs a finite number, not {bound!r}")
        self.charge(_WORD_SIZE, where)
        self.add(path, {path: {operator: bound, "$not": _array_type()}}, where)

    def array(self, values: list[Any] | tuple[Any, ...], where: Where, depth: int) -> list[Any]:
        self.enter(depth, where)
        # each element costs at least a word: refused before walking a list of any size
        if _WORD_SIZE * len(values) > self.bytes_left:
            self.charge(_WORD_SIZE * len(values), where)
        self.charge(_WORD_SIZE, where)
        literal: list[Any] = []
        for index, value in enumerate(values):
            at = (*where, index)
            if isinstance(value, dict):
                raise ValueError(
                    f"{_spell(at)}: a list in a search filter may hold scalars and lists only"
                )
            if isinstance(value, (list, tuple)):
                literal.append(self.array(value, at, depth + 1))
            else:
                literal.append(self.scalar(value, at))
        return literal

    def scalar(self, value: Any, where: Where) -> Any:
        """``value`` as MongoDB should compare it, if it is a JSON scalar BSON holds as it is."""
        if value is None or isinstance(value, bool):
            self.charge(_WORD_SIZE, where)
            return value if value is None else bool(value)
        if isinstance(value, str):
            self.charge(self.text_size(value, where), where)
            return str.__str__(value)
        if isinstance(value, int):
            number = int.__int__(value)
            if not _INT64_MIN <= number <= _INT64_MAX:
                raise ValueError(
                    f"{_spell(where)}: {number} is beyond int64; such integers are stored in a "
                    "tagged form that a filter cannot compare"
                )
            self.charge(_WORD_SIZE, where)
            return number
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(
                    f"{_spell(where)}: {value!r} is not JSON and never equals a stored value"
                )
            self.charge(_WORD_SIZE, where)
            return float.__float__(value)
        raise TypeError(
            f"{_spell(where)}: a search filter compares JSON values, not {type(value).__name__}"
        )
