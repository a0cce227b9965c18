"""The retry policy: one set of rules for requests and for resumed streams.

Which failures are worth another try, and how long to wait before it: the
server's own wish first (``retry-after-ms``, ``Retry-After``, taken when
within ``max_retry_after``), else a backoff that starts from the stream's
SSE ``retry:`` field (capped at ``max_retry_after`` too: one line must not
make every resume wait a day) or 0.5 s and doubles per attempt, capped, and
jittered so that many clients do not come back in step. How many attempts
is the caller's to say (``max_retries`` for a request, ``max_reconnects``
for a stream's resumes in a row).

:meth:`RetryPolicy.call` is the one retry loop of the package: requests,
resumes, the relay's store writes and its followers all go through it, each
with its own policy values and its own idea of what is worth retrying. It
decides nothing itself and touches no network: it sleeps (``anyio.sleep``
unless given another ``sleep``, as the tests do with a fake clock).

>>> policy = RetryPolicy()
>>> policy.delay(1, retry_after=3.0)
3.0
>>> policy.delay(1, server_retry=0.25)
0.25
>>> 0.75 * 8.0 <= policy.delay(10) <= 8.0
True
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ..errors import APIConnectionError, APIStatusError

__all__ = ["RETRY_STATUSES", "RetryPolicy", "retry_after"]

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses that say "not now" rather than "never"."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """What is retried and how long to wait; the same for requests and resumes.

    ``max_retry_after`` bounds the waits a server may ask for: a longer
    ``Retry-After`` is treated as if it had not been given (the backoff
    applies instead); a longer SSE ``retry:`` is cut to it.

    >>> RetryPolicy().retryable(APIStatusError("busy", status_code=503), idempotent=False)
    True
    """

    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = RETRY_STATUSES

    def retryable(self, error: BaseException, *, idempotent: bool) -> bool:
        """Whether another attempt may succeed, and may be made safely.

        A request that was sent but got no answer is retried only when it is
        idempotent: a ``POST`` that reached the server may have created a worker.
        """
        if isinstance(error, APIStatusError):
            return error.status_code in self.statuses
        if isinstance(error, APIConnectionError):
            return idempotent or not error.request_sent
        return False

    def delay(
        self, attempt: int, *, retry_after: float | None = None, server_retry: float | None = None
    ) -> float:
        """Seconds to wait before attempt ``attempt`` (1 for the first retry).

        ``retry_after`` is the server's answer to this attempt's failure;
        ``server_retry`` the stream's SSE ``retry:`` field, in seconds, which
        the standard makes the first wait before reconnecting (at most
        ``max_retry_after``).

        >>> RetryPolicy().delay(1, server_retry=86_400.0)
        60.0
        """
        if retry_after is not None and 0 < retry_after <= self.max_retry_after:
            return retry_after
        if server_retry is not None and (server_retry := _wait(server_retry)) is not None:
            # (not a wait: as if the field had not been sent)
            server_retry = min(server_retry, self.max_retry_after)
        first = server_retry if server_retry is not None else self.initial_delay
        # The exponent is bounded: 2.0 ** 1024 overflows, and a loop without a count
        # (``retries=None``) may come that far.
        wait = min(first * 2.0 ** min(attempt - 1, 64), max(self.max_delay, first))
        if attempt == 1 and server_retry is not None:
            return wait
        # Down by up to a quarter: never longer than asked, never in lockstep.
        return wait * (1 - 0.25 * random.random())

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        retries: int | None,
        retryable: Callable[[Exception], bool],
        delay: Callable[[int, Exception], float] | None = None,
        first_delay: float = 0.0,
        deadline: float | None = None,
        on_retry: Callable[[int, float, Exception], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> T:
        """``attempt()``'s result, trying again after a failure ``retryable`` accepts.

        ``retries``: how many times at most (``None``: no count, only the
        ``deadline``, a ``time.monotonic()`` past which no wait may end).
        ``delay(n, error)``: seconds before retry ``n`` (1 first); by
        default :meth:`delay`, honouring an error's ``retry_after``.
        ``first_delay``: seconds before the first attempt (a resume waits
        before it reconnects). The failure that ends the loop is raised as it
        was; cancellation is never caught.

        >>> import asyncio
        >>> answers = iter([ConnectionError("down"), ConnectionError("down"), "up"])
        >>> async def flaky():
        ...     answer = next(answers)
        ...     if isinstance(answer, Exception):
        ...         raise answer
        ...     return answer
        >>> async def no_wait(seconds: float) -> None: ...
        >>> down = lambda e: isinstance(e, ConnectionError)
        >>> asyncio.run(RetryPolicy().call(flaky, retries=3, retryable=down, sleep=no_wait))
        'up'
        """
        if first_delay > 0:
            await sleep(first_delay)
        n = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if (retries is not None and n >= retries) or not retryable(exc):
                    raise
                n += 1
                if delay is not None:
                    wait = delay(n, exc)
                else:
                    wait = self.delay(n, retry_after=getattr(exc, "retry_after", None))
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise
                if on_retry is not None:
                    on_retry(n, wait, exc)
                await sleep(wait)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The server's wish, in seconds, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be seconds or an HTTP date. What is not a wait (not
    a number, infinite, negative, a date past) is ``None``.

    >>> retry_after({"retry-after-ms": "1500"})
    1.5
    >>> retry_after({"retry-after": "2"})
    2.0
    >>> retry_after({"retry-after": "nan"}), retry_after({"retry-after": "9" * 5000})
    (None, None)
    """
    value = headers.get("retry-after-ms")
    if value:
        try:
            return _wait(float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _wait(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _wait(when.timestamp() - time.time())


def _wait(seconds: float) -> float | None:
    return seconds if 0 <= seconds < math.inf else None
