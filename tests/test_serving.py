"""The store service's encoding of large answers, piece by piece: the same bytes as the
protocol's one-call encoding, whatever the value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given

from agent_datastore import _protocol, _serving

from .test_values_round_trip import json_values


@given(json_values)
def test_pieces_join_to_the_protocols_encoding(value: Any) -> None:
    with pytest.MonkeyPatch.context() as patch:
        # tiny slices and pieces, so that every string and answer is cut
        patch.setattr(_serving, "_STRING_SLICE", 3)
        patch.setattr(_serving, "PIECE_BYTES", 8)
        pieces = _serving.json_pieces({"result": value})
    assert b"".join(pieces) == _protocol.dumps({"result": value})


def test_a_long_string_is_escaped_in_slices_and_sent_in_pieces() -> None:
    text = 'é"\\\n\u2028\x00😀' * 200_000  # 1.4 million characters, every kind of escape
    pieces = _serving.json_pieces({"result": text})
    assert b"".join(pieces) == _protocol.dumps({"result": text})
    assert len(pieces) > 1
    assert max(map(len, pieces)) <= _serving.PIECE_BYTES + 6 * 256 * 1024
