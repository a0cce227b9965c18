"""The bodies the resources share: requests checked before anything is sent,
responses decoded into their types or refused with a typed error."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec

from ...errors import APIResponseValidationError, APIStatusError, InvalidRequestError, excerpt
from ...types.worker import BUDGETS

__all__ = [
    "NOT_GIVEN",
    "NotGiven",
    "decode_body",
    "given_fields",
    "input_body",
    "opened",
    "today_only",
    "with_hint",
]

NO_ROUTE = frozenset({404, 405})
"""What a server answers a route it does not have: one of the other generation's."""

T = TypeVar("T")


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


def decode_body(raw: bytes, into: type[T]) -> T:
    """A response body as ``into``; :class:`APIResponseValidationError` if it is not one.

    >>> from handinger_stream.types.task import DeleteTaskResponse
    >>> decode_body(b'{"archived": true}', DeleteTaskResponse)
    DeleteTaskResponse(archived=True)
    >>> decode_body(b'{"archived": "yes"}', DeleteTaskResponse)
    Traceback (most recent call last):
      ...
    handinger_stream.errors.APIResponseValidationError: 200: the response is not a \
DeleteTaskResponse: Expected `bool`, got `str` - at `$.archived` (body: '{"archived": "yes"}')
    """
    try:
        return msgspec.json.decode(raw, type=into)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        name = getattr(into, "__name__", str(into))
        raise APIResponseValidationError(
            f"the response is not a {name}: {exc} (body: {excerpt(raw)!r})", status_code=200
        ) from None


async def opened(call: Awaitable[T]) -> T:
    """``call``, which opens a stream; a Worker answered instead of a stream that is not
    one (``{"object": "worker", "id": 5}``) is :class:`APIResponseValidationError`.

    The client's core turns such an answer into a snapshot with msgspec, whose
    ``ValidationError`` would otherwise reach the caller as it is.
    """
    try:
        return await call
    except msgspec.ValidationError as exc:
        raise APIResponseValidationError(
            f"the response is not a Worker: {exc}", status_code=200
        ) from None


class NotGiven:
    """The default of an argument whose ``None`` means something (``output_schema=None``
    clears a schema): left out of the request unless given."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN = NotGiven()


def given_fields(names: dict[str, str], **values: Any) -> dict[str, Any]:
    """The keyword arguments that were given, under their wire names.

    >>> given_fields({"output_schema": "outputSchema"}, output_schema=None, title=NOT_GIVEN)
    {'outputSchema': None}
    """
    return {names.get(k, k): v for k, v in values.items() if not isinstance(v, NotGiven)}


async def with_hint(call: Awaitable[T], statuses: frozenset[int], hint: str) -> T:
    """``call``'s result; an error status among ``statuses`` says ``hint`` too.

    The hint says which generation of the API a call belongs to, for a server
    that speaks the other one.
    """
    try:
        return await call
    except APIStatusError as exc:
        if exc.status_code in statuses:
            exc.message = f"{exc.message} ({hint})"
        raise


async def today_only(call: Awaitable[T], what: str) -> T:
    """``call``, one of today's API only; a 404/405 says so, for a seed-generation server.

    The 404 of an unknown id says the same with the hint's "if": the hint
    does not claim which it was.
    """
    return await with_hint(
        call,
        NO_ROUTE,
        f"if this server speaks the seed's generation of the API, it has no {what}: "
        "start runs there with client.workers.create(input=...)",
    )
