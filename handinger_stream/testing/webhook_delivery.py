"""Webhooks: a template's URL and token, deliveries with retries, and the log of every attempt.

When a task's turn ends, the emulator POSTs a JSON body to the template's
webhook URL with the token in ``X-Handinger-Token``. A failed attempt (no
connection, no answer in time, a status other than 2xx) is tried again with
backoff, through :meth:`RetryPolicy.call <handinger_stream.protocol.retry.RetryPolicy.call>`
and the emulator clock's waits; each attempt is logged as a WebhookExecution
(:class:`Execution`), listed newest first, :data:`PAGE_SIZE` to a page.

A receiver is outside the emulator's control, so everything is bounded: an
attempt's time, the answer read (its status only), the deliveries in flight
at once, the attempts kept per worker.

>>> check_url("https://example.com/hook")
'https://example.com/hook'
>>> check_url("http://example.com/hook")
Traceback (most recent call last):
  ...
handinger_stream.testing.refusals.Refusal: url: plain http is accepted only on loopback \
(127.0.0.1, ::1, localhost); anywhere else the URL must be https
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .._redact import redact_url
from ..errors import excerpt
from ..protocol.retry import RetryPolicy
from .clock import Clock, iso
from .refusals import Refusal

__all__ = [
    "PAGE_SIZE",
    "TOKEN_HEADER",
    "Deliveries",
    "Execution",
    "Webhook",
    "check_url",
    "execution_page",
]

TOKEN_HEADER = "X-Handinger-Token"
DELIVERY_HEADER = "X-Handinger-Delivery"  # the same for every attempt of one delivery
PAGE_SIZE = 20
"""Attempts per page of ``GET /api/workers/{id}/webhook/executions``."""
LOG_LIMIT = 1_000
"""Attempts kept per worker; older ones are dropped."""
_URL_CHARS = 2_048
_log = logging.getLogger(__name__)


def check_url(value: Any) -> str | None:
    """A webhook URL the emulator will deliver to (``None`` removes the webhook), or a 400.

    The service wants https; the emulator also takes plain http on loopback,
    where tests run their receivers.

    >>> check_url("http://127.0.0.1:8080/hook")
    'http://127.0.0.1:8080/hook'
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _URL_CHARS:
        raise Refusal(400, f"url: a URL of at most {_URL_CHARS} characters, or null")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise Refusal(400, "url: not a URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise Refusal(400, "url: must be an https URL")
    if parts.scheme == "http" and not _loopback(host):
        raise Refusal(
            400,
            "url: plain http is accepted only on loopback (127.0.0.1, ::1, localhost); "
            "anywhere else the URL must be https",
        )
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _new_token() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


@dataclass
class Webhook:
    """A template's webhook: where deliveries go, and the shared secret they carry.

    The token is a secret: it stays out of ``repr``.

    >>> hook = Webhook()
    >>> hook.set_url("https://example.com/hook")
    >>> hook
    Webhook(url='https://example.com/hook', token='***')
    """

    url: str | None = None
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        token = "None" if self.token is None else "'***'"
        return f"Webhook(url={self.url!r}, token={token})"

    def set_url(self, url: str | None) -> None:
        """A token is made the first time a URL is set and kept after; ``None`` clears both."""
        if url is None:
            self.url = self.token = None
            return
        self.url = url
        if self.token is None:
            self.token = _new_token()

    def regenerate_token(self) -> None:
        """A new token (the old one stops working at once); a 409 when no webhook is set."""
        if self.url is None:
            raise Refusal(409, "no webhook is set: PUT a url first")
        self.token = _new_token()

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "token": self.token}


@dataclass
class Execution:
    """One delivery attempt, as ``WebhookExecution`` shows it."""

    id: str
    worker_id: str
    task_id: str | None
    task_title: str | None
    url: str
    created_at: float
    duration_ms: int
    request_status: str  # success, error
    response_status: int | None = None
    error_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workerId": self.worker_id,
            "taskId": self.task_id,
            "taskTitle": self.task_title,
            "url": self.url,
            "createdAt": iso(self.created_at),
            "durationMs": self.duration_ms,
            "requestStatus": self.request_status,
            "responseStatus": self.response_status,
            "errorMessage": self.error_message,
        }


def execution_page(log: list[Execution], page: Any) -> dict[str, Any]:
    """One page (1-based, newest first) of ``log`` (kept oldest first), or a 400 naming ``page``.

    >>> execution_page([], "1")
    {'logs': [], 'page': 1, 'pageCount': 0, 'totalCount': 0}
    """
    if page is None:
        number = 1
    elif isinstance(page, str) and page.isdigit() and len(page) < 10 and int(page) >= 1:
        number = int(page)
    else:
        raise Refusal(400, "page: a whole number from 1")
    newest = log[::-1]
    start = (number - 1) * PAGE_SIZE
    return {
        "logs": [e.to_json() for e in newest[start : start + PAGE_SIZE]],
        "page": number,
        "pageCount": math.ceil(len(log) / PAGE_SIZE),
        "totalCount": len(log),
    }


class _Failed(Exception):
    """An attempt that did not get a 2xx answer (logged already; worth another try)."""


class Deliveries:
    """Posts deliveries in the background, each attempt logged; every wait and number bounded.

    ``timeout``: seconds an attempt may take, answer included; ``retries``:
    attempts after the first; ``concurrency``: deliveries in flight at once
    (more wait their turn); ``policy``: the backoff between attempts, waited
    on ``clock`` (an :class:`~handinger_stream.testing.clock.EmulatorClock`
    makes it near instant).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        concurrency: int = 8,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.retries = retries
        self.policy = policy or RetryPolicy(initial_delay=0.5, max_delay=8.0)
        self._gate = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._deliveries = itertools.count(1)

    def deliver(
        self,
        webhook: Webhook,
        body: bytes,
        *,
        worker_id: str,
        task_id: str | None,
        task_title: str | None,
        log: list[Execution],
    ) -> str | None:
        """Start delivering ``body`` to ``webhook`` (as it is now); the delivery's id, or None
        when no webhook is set."""
        if webhook.url is None or webhook.token is None:
            return None
        delivery = f"dlv_{next(self._deliveries):06d}"
        job = _Job(webhook.url, webhook.token, delivery, body, worker_id, task_id, task_title, log)
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    @property
    def busy(self) -> bool:
        """Whether a delivery is in flight."""
        return bool(self._tasks)

    async def idle(self) -> None:
        """Return once no delivery is in flight (those started meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Stop every delivery in flight and close the connections."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _run(self, job: _Job) -> None:
        async with self._gate:
            try:
                await self.policy.call(
                    lambda: self._attempt(job),
                    retries=self.retries,
                    retryable=lambda exc: isinstance(exc, _Failed),
                    sleep=self.clock.sleep,
                )
            except _Failed:
                pass  # every attempt is in the log; nobody else is waiting for the outcome
            except Exception:  # a bug of ours: said once, and the emulator goes on
                _log.exception(
                    "webhook delivery %s to %s failed", job.delivery, redact_url(job.url)
                )

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No pooled connection outlives an attempt; no proxy from the environment.
                connector=aiohttp.TCPConnector(force_close=True, limit=self._concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trust_env=False,
            )
        return self._session

    async def _attempt(self, job: _Job) -> None:
        started, created_at = time.monotonic(), self.clock.now()
        status: int | None = None
        problem: str | None = None
        headers = {
            "content-type": "application/json",
            "user-agent": "handinger-emulator-webhooks",
            TOKEN_HEADER: job.token,
            DELIVERY_HEADER: job.delivery,
        }
        try:
            # Only the status is read: a receiver's answer, however large, is not the emulator's.
            async with self._open().post(
                job.url, data=job.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
            if not 200 <= status < 300:
                problem = f"the receiver answered HTTP {status}"
        except asyncio.TimeoutError:
            problem = f"no answer within {self.timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            # The exception's text names the host, never the token (it is only in a header).
            problem = f"{type(exc).__name__}: {excerpt(redact_url(str(exc)), 200)}"
        job.log.append(
            Execution(
                id=f"whx_{next(self._ids):06d}",
                worker_id=job.worker_id,
                task_id=job.task_id,
                task_title=job.task_title,
                url=job.url,
                created_at=created_at,
                duration_ms=round((time.monotonic() - started) * 1000),
                request_status="error" if problem else "success",
                response_status=status,
                error_message=problem,
            )
        )
        del job.log[:-LOG_LIMIT]
        if problem:
            raise _Failed(problem)


@dataclass(frozen=True)
class _Job:
    url: str
    token: str = field(repr=False)
    delivery: str
    body: bytes = field(repr=False)
    worker_id: str
    task_id: str | None
    task_title: str | None
    log: list[Execution] = field(repr=False, compare=False)
