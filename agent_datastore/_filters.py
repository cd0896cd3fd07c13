"""Placeholder until the filters branch lands: LangGraph search filters as MongoDB queries."""

from __future__ import annotations

from typing import Any

__all__ = ["value_query"]


def value_query(value_filter: object) -> dict[str, Any]:
    if not value_filter:
        return {}
    raise NotImplementedError("search filters are not translated yet")
