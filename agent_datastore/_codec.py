"""JSON values to BSON and back, with JSON semantics.

``encode`` validates a value as JSON (what ``json.dumps(value, allow_nan=False)`` accepts),
normalises it the way a JSON round trip would (tuples become lists, non-string dict keys become
their JSON spelling, subclasses become their base type) and makes it storable on every MongoDB
version from 4.4 up, in one pass that also computes the exact BSON size of the result.

Most values are stored as they are. Only the parts BSON cannot hold are wrapped in a tagged
sub-document ``{"__ads__": <kind>, ...}`` (see docs/schema.md):

- ``"dict"``: a dict with a key that is empty, contains ``.`` or NUL, starts with ``$`` or is
  ``"__ads__"`` itself, stored as ``{"__ads__": "dict", "items": [[key, value], ...]}``;
- ``"int"``: an integer outside int64, stored as ``{"__ads__": "int", "digits": "<decimal>"}``;
- ``"json"``: a sub-value that would nest deeper than MongoDB's 100 levels, stored as
  ``{"__ads__": "json", "text": "<JSON text>"}``.

A value may nest at most ``MAX_VALUE_DEPTH`` lists and dicts, on every Python, so that what
one process stores every supported Python can read back (see ``MAX_VALUE_DEPTH``).

Any stored dict holding the tag key is one of these, because a user dict with that key is
always wrapped; so ``decode`` is unambiguous.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from bson.int64 import Int64

__all__ = [
    "MAX_ENCODED_BYTES",
    "MAX_NESTING",
    "MAX_VALUE_DEPTH",
    "TAG",
    "EncodedValue",
    "ValueTooLarge",
    "array_names_size",
    "decode",
    "encode",
    "string_size",
]

TAG = "__ads__"

# MongoDB refuses documents nested more than 100 levels (each document or array is a level).
# The item document itself is level 1.
MAX_NESTING = 100
# A container at a deeper level than this is stored as JSON text: the tagged dict form needs
# three levels (wrapper, item list, pair) above its values.
_LAST_STRUCTURED_LEVEL = MAX_NESTING - 3

# The deepest a value (or one metadata value) may nest: lists and dicts on its deepest path, so
# that 1 and "a" are depth 0, [] and {"a": 1} depth 1, {"a": [1]} depth 2. Without a limit of
# its own the store would take whatever depth json.dumps survives on the running interpreter
# (about 990 levels on 3.10 and 3.11, 1,500 on 3.12, 10,000 on 3.13) and a 3.13 process could
# store a value that every older reader fails to parse. 400 is what every Python from 3.10 reads
# with room to spare on each path a value takes: json.loads and json.dumps in C (about 990
# levels on 3.10 and 3.11, where they share the 1,000-frame recursion limit), the store
# service's pure-Python parser of large bodies (two frames a level: about 495 levels, and a
# body nests a value up to 2 levels deeper) and its encoder of large answers (one frame a
# level), each from the call depth where the store runs it.
MAX_VALUE_DEPTH = 400

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DICT_KEY_TYPES = (str, int, float, bool, type(None))

# No stored value can be larger than a MongoDB document (16 MiB). Encoding stops as soon as a
# container's running size passes this, so that a value far over the limit (a body of millions
# of empty objects sent to the store service) costs no more than the limit to refuse.
MAX_ENCODED_BYTES = 16 * 1024 * 1024


class ValueTooLarge(Exception):
    """A value whose encoding passed ``MAX_ENCODED_BYTES`` (``size`` bytes so far): it cannot
    be stored whatever else the document holds. Raised before the rest is encoded."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


EncodedValue = tuple[Any, int]
"""A storable value and the size in bytes of its BSON payload (without type byte and name)."""


def string_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8; ``UnicodeEncodeError`` for lone surrogates."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def array_names_size(count: int) -> int:
    """Bytes taken by the names "0", "1", ... of ``count`` array elements, NULs included."""
    total, digits, bound = 0, 1, 10
    start = 0
    while start < count:
        end = min(count, bound)
        total += (end - start) * (digits + 1)
        start, digits, bound = end, digits + 1, bound * 10
    return total


def _not_json(value: object) -> TypeError:
    return TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode(value: Any, level: int) -> EncodedValue:
    """Encode ``value`` for storage as a field whose containers start at nesting ``level``.

    Raises ``TypeError`` for anything that is not JSON (NaN and infinities included), that is
    cyclic, or that nests deeper than ``MAX_VALUE_DEPTH`` (or than the caller's stack leaves
    room for), and ``ValueTooLarge`` as soon as the value is known to be over
    ``MAX_ENCODED_BYTES``.
    """
    try:
        kind = type(value)
        if kind is dict or kind is list:
            plain = _plain_dict(value, level) if kind is dict else _plain_list(value, level)
            if plain is not None:
                return plain
        return _encode(value, level)
    except RecursionError:
        pass  # the caller's stack ran out first: below, out of the handler, say why
    except UnicodeEncodeError as exc:
        raise TypeError(f"string is not valid Unicode (lone surrogate at {exc.start})") from None
    _check_depth(value, MAX_VALUE_DEPTH)  # a cycle, or past the limit: what the value is
    raise TypeError("value is nested too deeply to serialise from this deep a call")


# The fast path: a value made only of dicts with plain names, lists, str, int64, finite
# float, bool and None (of exactly those types) is stored as it is, copied container by
# container as the general path copies it. One loop per container, with the scalars handled
# inline, costs about half of the general path. It raises only ``ValueTooLarge``, as the general
# path would: on anything else (a tag to add, a subclass, a tuple, a non-JSON value, a lone
# surrogate, too deep) it gives up with None, and the general path encodes the value from the
# start, or raises as it always has. The size is checked where it can grow by much: after a
# container's names (so a list of millions of elements is refused by its length alone), after
# each string and after each nested container.


def _plain_dict(value: dict[Any, Any], level: int) -> EncodedValue | None:
    if level > _LAST_STRUCTURED_LEVEL:
        return None
    out = value.copy()
    size = 5
    try:
        for name in out:
            if (
                type(name) is not str
                or not name
                or name[0] == "$"
                or "." in name
                or "\x00" in name
                or name == TAG
            ):
                return None
            size += (len(name) if name.isascii() else len(name.encode("utf-8"))) + 2
    except UnicodeEncodeError:
        return None
    if size > MAX_ENCODED_BYTES:
        raise ValueTooLarge(size)
    return _plain_items(out, out.items(), size, level)


def _plain_list(value: list[Any], level: int) -> EncodedValue | None:
    if level > _LAST_STRUCTURED_LEVEL:
        return None
    out = value.copy()
    size = 5 + array_names_size(len(out)) + len(out)
    if size > MAX_ENCODED_BYTES:
        raise ValueTooLarge(size)
    return _plain_items(out, enumerate(out), size, level)


def _plain_items(
    out: Any, slots: Iterable[tuple[Any, Any]], size: int, level: int
) -> EncodedValue | None:
    """The values of a container copy ``out`` (a dict's names already counted in ``size``),
    each found at its slot (a name or an index), with nested containers replaced by their
    own copies."""
    try:
        for slot, item in slots:
            kind = type(item)
            if kind is str:
                size += (len(item) if item.isascii() else len(item.encode("utf-8"))) + 5
                if size > MAX_ENCODED_BYTES:
                    raise ValueTooLarge(size)
            elif kind is int:
                if _INT32_MIN <= item <= _INT32_MAX:
                    size += 4
                elif _INT64_MIN <= item <= _INT64_MAX:
                    size += 8
                else:
                    return None
            elif kind is float:
                if not math.isfinite(item):
                    return None
                size += 8
            elif kind is bool:
                size += 1
            elif item is None:
                pass
            else:
                if kind is dict:
                    inner = _plain_dict(item, level + 1)
                elif kind is list:
                    inner = _plain_list(item, level + 1)
                else:
                    return None
                if inner is None:
                    return None
                out[slot] = inner[0]
                size += inner[1]
                if size > MAX_ENCODED_BYTES:
                    raise ValueTooLarge(size)
    except UnicodeEncodeError:
        return None
    return out, size


def _encode(value: Any, level: int, room: int = MAX_VALUE_DEPTH) -> EncodedValue:
    """``value`` encoded at nesting ``level``, where it may nest at most ``room`` more lists
    and dicts (the tagged dict form takes three levels but one of ``room``)."""
    kind = type(value)
    if kind is str:
        # its size is known at once: the caller reports it whole (its container, if any,
        # stops as soon as it adds it)
        return value, string_size(value) + 5
    if kind is int:
        if _INT32_MIN <= value <= _INT32_MAX:
            return value, 4
        if _INT64_MIN <= value <= _INT64_MAX:
            return value, 8
        return _encode_big_int(value)
    if kind is float:
        if math.isfinite(value):
            return value, 8
        raise TypeError(f"Out of range float values are not JSON compliant: {value!r}")
    if kind is bool:
        return value, 1
    if value is None:
        return None, 0
    if kind is dict:
        return _encode_dict(value, level, room)
    if kind is list or kind is tuple:
        return _encode_list(value, level, room)
    # Subclasses are stored as their JSON base type, as json.dumps would write them.
    if isinstance(value, str):
        return _encode(str.__str__(value), level)
    if isinstance(value, int):
        return _encode(int.__int__(value), level)
    if isinstance(value, float):
        return _encode(float.__float__(value), level)
    if isinstance(value, dict):
        return _encode_dict(value, level, room)
    if isinstance(value, (list, tuple)):
        return _encode_list(value, level, room)
    raise _not_json(value)


def _encode_big_int(value: int) -> EncodedValue:
    try:
        digits = str(value)
    except ValueError as exc:  # beyond Python's int-to-str digit limit: not JSON either
        raise TypeError(str(exc)) from None
    return _tagged("int", "digits", digits, string_size(digits) + 5)


def _tagged(kind: str, field: str, payload: Any, payload_size: int) -> EncodedValue:
    size = 4 + (1 + len(TAG) + 1 + len(kind) + 5) + (1 + len(field) + 1 + payload_size) + 1
    return {TAG: kind, field: payload}, size


def _encode_as_text(value: Any, room: int) -> EncodedValue:
    _check_depth(value, room)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # circular reference or NaN, as json reports it
        raise TypeError(str(exc)) from None
    return _tagged("json", "text", text, string_size(text) + 5)


def _json_key(key: Any) -> str:
    kind = type(key)
    if kind is str:
        return key  # type: ignore[no-any-return]
    if not isinstance(key, _DICT_KEY_TYPES):
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
    if isinstance(key, str):
        return str.__str__(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if not math.isfinite(key):
        raise TypeError(f"Out of range float values are not JSON compliant: {key!r}")
    return float.__repr__(key)


def _is_plain_name(name: str) -> bool:
    return bool(name) and name[0] != "$" and "." not in name and "\x00" not in name and name != TAG


def _encode_dict(value: dict[Any, Any], level: int, room: int) -> EncodedValue:
    if level > _LAST_STRUCTURED_LEVEL:
        return _encode_as_text(value, room)
    out: dict[str, Any] = {}
    names_size = 0
    plain = True
    # json.dumps asks a dict subclass for its own items(), in its own order (an OrderedDict)
    items = dict.items(value) if type(value) is dict else value.items()
    for raw_key, item in items:
        # Two keys with one JSON spelling keep the first one's place and the last one's value,
        # as json.loads does.
        out[raw_key if type(raw_key) is str else _json_key(raw_key)] = item
    for name in out:
        if plain and not _is_plain_name(name):
            plain = False
        names_size += string_size(name)
    if not plain:
        return _encode_pairs(out, level, room)
    size = 5 + names_size + 2 * len(out)
    if size > MAX_ENCODED_BYTES:
        raise ValueTooLarge(size)
    for name, item in out.items():
        stored, item_size = _encode(item, level + 1, room - 1)
        if stored is not item:
            out[name] = stored
        size += item_size
        if size > MAX_ENCODED_BYTES:
            raise ValueTooLarge(size)
    return out, size


def _encode_pairs(value: dict[str, Any], level: int, room: int) -> EncodedValue:
    pairs: list[list[Any]] = []
    pairs_size = 5 + array_names_size(len(value)) + len(value)
    for name, item in value.items():
        stored, item_size = _encode(item, level + 3, room - 1)
        # a pair is an array ["name", value] with element names "0" and "1"
        pairs_size += 5 + (3 + string_size(name) + 5) + (3 + item_size)
        if pairs_size > MAX_ENCODED_BYTES:
            raise ValueTooLarge(pairs_size)
        pairs.append([name, stored])
    return _tagged("dict", "items", pairs, pairs_size)


def _encode_list(value: list[Any] | tuple[Any, ...], level: int, room: int) -> EncodedValue:
    if level > _LAST_STRUCTURED_LEVEL:
        return _encode_as_text(value, room)
    out = list(value)
    size = 5 + array_names_size(len(out)) + len(out)
    if size > MAX_ENCODED_BYTES:
        raise ValueTooLarge(size)
    for index, item in enumerate(out):
        stored, item_size = _encode(item, level + 1, room - 1)
        if stored is not item:
            out[index] = stored
        size += item_size
        if size > MAX_ENCODED_BYTES:
            raise ValueTooLarge(size)
    return out, size


def _check_depth(value: Any, room: int) -> None:
    """``TypeError`` if the container ``value`` nests more than ``room`` lists and dicts or
    contains itself. Without recursion, so that no depth is too much to check, and in time
    linear in its distinct containers (a value may share one container in many places)."""
    if room < 1:
        raise _too_deep()
    heights: dict[int, int] = {}  # of the containers whose every path has been walked
    path: list[tuple[Any, Iterator[Any]]] = [(value, iter(_children(value)))]
    on_path = {id(value)}
    tallest = [1]  # per container on the path: its height so far
    while path:
        node, children = path[-1]
        for child in children:
            if not isinstance(child, (dict, list, tuple)):
                continue
            child_id = id(child)
            if child_id in on_path:
                raise TypeError("Circular reference detected")
            height = heights.get(child_id)
            if height is None:
                if len(path) >= room:
                    raise _too_deep()
                path.append((child, iter(_children(child))))
                on_path.add(child_id)
                tallest.append(1)
                break
            if len(path) + height > room:
                raise _too_deep()
            tallest[-1] = max(tallest[-1], height + 1)
        else:
            path.pop()
            on_path.discard(id(node))
            height = tallest.pop()
            heights[id(node)] = height
            if tallest:
                tallest[-1] = max(tallest[-1], height + 1)


def _children(container: Any) -> Iterable[Any]:
    return dict.values(container) if isinstance(container, dict) else container


def _too_deep() -> TypeError:
    return TypeError(
        f"value is nested too deeply: more than {MAX_VALUE_DEPTH} levels of lists and dicts"
    )


def decode(stored: Any) -> Any:
    """Turn a stored value back into the JSON value it encodes. Mutates ``stored`` in place."""
    kind = type(stored)
    if kind is dict:
        if TAG in stored:
            return _decode_tagged(stored)
        for name, item in stored.items():
            if type(item) in _NEEDS_DECODING:
                stored[name] = decode(item)
        return stored
    if kind is list:
        # one pass at C speed finds most lists (of scalars) with nothing to decode in them
        if _NEEDS_DECODING.isdisjoint(map(type, stored)):
            return stored
        for index, item in enumerate(stored):
            if type(item) in _NEEDS_DECODING:
                stored[index] = decode(item)
        return stored
    if kind is Int64:
        return int(stored)
    return stored


_NEEDS_DECODING = frozenset({dict, list, Int64})


def _decode_tagged(stored: dict[str, Any]) -> Any:
    kind = stored[TAG]
    if kind == "dict":
        return {name: decode(item) for name, item in stored["items"]}
    if kind == "int":
        return int(stored["digits"])
    if kind == "json":
        return json.loads(stored["text"])
    raise ValueError(f"stored value has an unknown encoding tag {kind!r}")
