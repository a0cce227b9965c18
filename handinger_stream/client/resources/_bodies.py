"""Request bodies the resources share, checked before anything is sent."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidRequestError
from ...types.worker import BUDGETS

__all__ = ["input_body"]


def input_body(input: str, budget: str | None) -> dict[str, Any]:
    """The body of a call that starts a run: ``input``, and ``budget`` when given.

    >>> input_body("Hi", "low")
    {'input': 'Hi', 'budget': 'low'}
    """
    if not isinstance(input, str) or not input:
        raise InvalidRequestError("input must be a non-empty string")
    body: dict[str, Any] = {"input": input}
    if budget is not None:
        if budget not in BUDGETS:
            raise InvalidRequestError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")
        body["budget"] = budget
    return body
