"""RedisStore: the relay's store in Redis, shared by any number of relay processes.

Per chat, three keys (``PREFIX`` is ``handinger:relay:`` by default):

- ``PREFIX{chat}:s``, a Redis Stream: one entry per event, with the id
  ``0-{seq}`` (so ``XREAD`` from ``0-{seq}`` gives what follows seq), fields
  ``d`` (the event's JSON), ``u`` (its upstream SSE id), ``s`` (a snapshot),
  or ``e`` and ``x`` for a turn's end marker and its error. ``XADD … MAXLEN ~``
  bounds it; it expires ``keep_seconds`` after the turn ends.
- ``PREFIX{chat}:m``, a hash: ``worker``, ``active``, ``turn_start``,
  ``last_seq``, ``last_up``, ``status``, ``error``, ``producer``, ``updated``
  (ms) and ``fence`` (the lease counter).
- ``PREFIX{chat}:l``, the producer lease: ``"{fence} {nonce}"``, set if absent
  with an expiry, renewed by appends and by the producer's heartbeat.

and ``PREFIX active``, a sorted set of the chats with a turn running (score:
the last append, ms): :meth:`RedisStore.fleet` reads it.

A chat's owner (the principal that started it) is the ``owner`` field of its
hash, set in the same script that creates the hash (:meth:`RedisStore.admit_turn`).
Per principal (``P``: a digest of its name, so that no name can shape a key),
the quota's counts: ``PREFIX principal:P:turns``, a hash (chat id →
``"{admitted ms} {fence}"``: a turn counts while its chat's lease exists, or
for ``hold`` after its admission while no lease was given since),
``…:rate`` (one member per admission, scored by its time) and ``…:chats``
(the chats it owns).

Every write is a Lua script that checks the lease in the same atomic step
(fencing); appends carry the seq they start at, so a retry after a lost
reply is recognised and not applied twice.

>>> store = RedisStore("redis://:hunter2@127.0.0.1:6379/0")
>>> "hunter2" in repr(store)
False
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._redact import redact_url
from ..errors import InvalidRequestError
from ..protocol.retry import RetryPolicy
from ._signal import Signal, batched, joined
from .errors import (
    ChatBusyError,
    EntriesGoneError,
    LeaseLostError,
    StoreFullError,
    StoreUnavailableError,
)
from .store import (
    CHAT_SECONDS,
    KEEP_SECONDS,
    MAX_EVENTS,
    Admission,
    ChatInfo,
    Entry,
    Lease,
    NewEntry,
    Quota,
    Store,
    check_principal,
)

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

DEFAULT_PREFIX = "handinger:relay:"
_BLOCK_MS = 2000  # one XREAD BLOCK call at most; then the follower looks around
_LINGER = 5.0  # a follower with no reader stops after this long
_WINDOW = 4096  # entries a follower keeps for the readers of its process
_MAX_FOLLOWED = 10_000  # chats followed at once by one process (a connection each)
# A follower's XREAD while Redis is unavailable: again soon, then every 2 s at most.
_FOLLOW_RETRY = RetryPolicy(initial_delay=0.1, max_delay=2.0)
_BUSY_RETRY = 5.0  # seconds: when a running turn ends is not known; a guess to retry after
_T = TypeVar("_T")

# -- the scripts ---------------------------------------------------------------

_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function reply(m, fence)
  local v = redis.call('HMGET', m, 'last_seq', 'last_up', 'worker', 'turn_start')
  return {fence, v[1] or '0', v[2] or '', v[3] or '', v[4] or '1'}
end
-- Is the lease (token) ours? A lease that lapsed while nobody took it is taken back.
local function fenced(m, l, token, ttl)
  local cur = redis.call('GET', l)
  if cur == token then
    redis.call('PEXPIRE', l, ttl)
    return true
  end
  if not cur then
    local fence = string.match(token, '^(%d+) ')
    if redis.call('HGET', m, 'fence') == fence and redis.call('HGET', m, 'active') == '1' then
      redis.call('SET', l, token, 'PX', ttl)
      return true
    end
  end
  return false
end
"""

# KEYS: meta, lease, active set, stream. ARGV: chat id, holder, ttl ms, nonce, mode.
_ACQUIRE = (
    _LIB
    + """
local m, l, a, s = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cur = redis.call('GET', l)
if cur then
  local fence, nonce = string.match(cur, '^(%d+) (.*)$')
  if nonce == ARGV[4] then return reply(m, tonumber(fence)) end  -- our own retry
  return {-1}
end
local active = redis.call('HGET', m, 'active') == '1'
if (ARGV[5] == 'turn') == active then return {-1} end
local fence = redis.call('HINCRBY', m, 'fence', 1)
redis.call('SET', l, fence .. ' ' .. ARGV[4], 'PX', ARGV[3])
redis.call('HSET', m, 'producer', ARGV[2])
if ARGV[5] == 'turn' then
  local last = tonumber(redis.call('HGET', m, 'last_seq') or '0')
  local now = now_ms()
  redis.call('HSET', m, 'active', '1', 'turn_start', last + 1, 'status', 'pending', 'updated', now)
  redis.call('HDEL', m, 'error')
  redis.call('PERSIST', m)
  redis.call('PERSIST', s)
  redis.call('ZADD', a, now, ARGV[1])
end
return reply(m, fence)
"""
)

# KEYS: meta, lease, stream, active set. ARGV: token, ttl ms, first seq, maxlen, chat id,
# then (data, upstream id, snapshot flag) per entry.
_APPEND = (
    _LIB
    + """
local m, l, s, a = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if not fenced(m, l, ARGV[1], ARGV[2]) then return -1 end
local last = tonumber(redis.call('HGET', m, 'last_seq') or '0')
local first = tonumber(ARGV[3])
local n = (#ARGV - 5) / 3
if last >= first + n - 1 then return last end  -- applied already: a retry
if last ~= first - 1 then return -2 end
local up = false
for i = 0, n - 1 do
  local d, u, snap = ARGV[6 + 3 * i], ARGV[7 + 3 * i], ARGV[8 + 3 * i]
  local id = '0-' .. (first + i)
  if u ~= '' then
    up = u
    if snap == '1' then
      redis.call('XADD', s, 'MAXLEN', '~', ARGV[4], id, 'd', d, 'u', u, 's', '1')
    else
      redis.call('XADD', s, 'MAXLEN', '~', ARGV[4], id, 'd', d, 'u', u)
    end
  elseif snap == '1' then
    redis.call('XADD', s, 'MAXLEN', '~', ARGV[4], id, 'd', d, 's', '1')
  else
    redis.call('XADD', s, 'MAXLEN', '~', ARGV[4], id, 'd', d)
  end
end
local now = now_ms()
redis.call('HSET', m, 'last_seq', first + n - 1, 'status', 'running', 'updated', now)
if up then redis.call('HSET', m, 'last_up', up) end
redis.call('ZADD', a, now, ARGV[5])
return first + n - 1
"""
)

# KEYS: meta, lease, stream, active set. ARGV: token, ttl ms, maxlen, chat id, keep ms,
# chat ms, error ('' for none), failed flag.
_FINISH = (
    _LIB
    + """
local m, l, s, a = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local fence = string.match(ARGV[1], '^(%d+) ')
if redis.call('HGET', m, 'active') ~= '1' and redis.call('HGET', m, 'fence') == fence then
  return 0  -- finished already: a retry
end
if not fenced(m, l, ARGV[1], ARGV[2]) then return -1 end
local seq = tonumber(redis.call('HGET', m, 'last_seq') or '0') + 1
local now = now_ms()
if ARGV[8] == '1' then
  redis.call('XADD', s, 'MAXLEN', '~', ARGV[3], '0-' .. seq, 'e', '1', 'x', ARGV[7])
  redis.call('HSET', m, 'status', 'failed', 'error', ARGV[7])
else
  redis.call('XADD', s, 'MAXLEN', '~', ARGV[3], '0-' .. seq, 'e', '1')
  redis.call('HSET', m, 'status', 'completed')
  redis.call('HDEL', m, 'error')
end
redis.call('HSET', m, 'last_seq', seq, 'active', '0', 'updated', now)
redis.call('DEL', l)
redis.call('ZREM', a, ARGV[4])
redis.call('PEXPIRE', s, ARGV[5])
redis.call('PEXPIRE', m, ARGV[6])
return seq
"""
)

# KEYS: meta, lease. ARGV: token, ttl ms, worker id ('' to only renew).
_RENEW = (
    _LIB
    + """
if not fenced(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'worker', ARGV[3]) end
return 1
"""
)

# KEYS: meta, turns, rate, chats (the principal's). ARGV: principal, prefix, chat id,
# max turns, max rate, window ms, max chats, hold ms, chat ms, nonce ('' for no limit).
# The keys of the principal's other chats are named here, from the prefix: each is read
# to know whether the chat still counts (so this store needs a single Redis, as the
# fleet's active set does already).
_ADMIT = (
    _LIB
    + """
local m, tk, rk, ck = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local who, prefix, chat = ARGV[1], ARGV[2], ARGV[3]
local window, hold, chat_ms = tonumber(ARGV[6]), tonumber(ARGV[8]), tonumber(ARGV[9])
local now = now_ms()
local new = redis.call('EXISTS', m) == 0
if not new and redis.call('HGET', m, 'owner') ~= who then return {'owner', 0, 0} end
if new and ARGV[7] ~= '' then
  local count, soonest = 0, false
  for _, c in ipairs(redis.call('ZRANGE', ck, 0, -1)) do
    local cm = prefix .. c .. ':m'
    if redis.call('HGET', cm, 'owner') == who then
      count = count + 1
      local ttl = redis.call('PTTL', cm)
      if ttl > 0 and (not soonest or ttl < soonest) then soonest = ttl end
    else
      redis.call('ZREM', ck, c)  -- expired, or its id was taken up again by another
    end
  end
  if count >= tonumber(ARGV[7]) then return {'chats', soonest or window, 0} end
end
if ARGV[4] ~= '' then
  local count, held = 0, redis.call('HGETALL', tk)
  for i = 1, #held, 2 do
    local c = held[i]
    local at, fence = string.match(held[i + 1], '^(%d+) (%d+)$')
    local v = redis.call('HMGET', prefix .. c .. ':m', 'active', 'owner', 'fence')
    local running = false
    if v[2] == who then
      -- The lease, not 'active': a turn whose producer died and that nobody reads
      -- stays active for ever, and must not hold its principal's slot for ever.
      running = (v[1] == '1' and redis.call('EXISTS', prefix .. c .. ':l') == 1)
        -- admitted, not begun yet: no lease was given since (the fence is as it was)
        or (tonumber(at or '0') + hold > now and (v[3] or '0') == fence)
    end
    if not running then
      redis.call('HDEL', tk, c)
    elseif c ~= chat then
      count = count + 1
    end
  end
  if count >= tonumber(ARGV[4]) then return {'turns', -1, 0} end
end
if ARGV[5] ~= '' then
  redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - window)
  if redis.call('ZCARD', rk) >= tonumber(ARGV[5]) then
    local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    return {'rate', tonumber(oldest[2]) + window - now, 0}
  end
end
if new then
  redis.call('HSET', m, 'owner', who)
  redis.call('PEXPIRE', m, chat_ms)  -- a chat claimed and never begun expires as an idle one
end
if ARGV[7] ~= '' then
  redis.call('ZADD', ck, now, chat)
  redis.call('PEXPIRE', ck, chat_ms)
end
if ARGV[4] ~= '' then
  redis.call('HSET', tk, chat, now .. ' ' .. (redis.call('HGET', m, 'fence') or '0'))
  redis.call('PEXPIRE', tk, chat_ms)
end
if ARGV[5] ~= '' then
  redis.call('ZADD', rk, now, now .. ' ' .. ARGV[10])
  redis.call('PEXPIRE', rk, window)
end
return {'', 0, new and 1 or 0}
"""
)

# KEYS: the principal's turns. ARGV: chat id.
_DROP = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], '0 0')  -- counts on only while the chat's lease lives
end
return 0
"""

# KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _seq(entry_id: bytes) -> int:
    return int(entry_id.rpartition(b"-")[2])


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    seq = _seq(entry_id)
    if b"e" in fields:
        error = fields.get(b"x")
        return Entry(seq, end=True, error=None if error is None else error.decode())
    upstream = fields.get(b"u")
    return Entry(
        seq,
        fields.get(b"d", b""),
        None if upstream is None else upstream.decode(),
        b"s" in fields,
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None or value == b"" else value.decode()


class _Follower:
    """One ``XREAD BLOCK`` loop per chat and process: its readers share what it reads.

    Its window is a list of consecutive entries from seq ``first`` on, so that a
    reader's slice costs its length, wherever it stands (a deque's ``islice``
    walks from the left: on long turns, a thousand readers paid for the walk).
    History a reader had to fetch is put in front of the window when it joins
    it, so that the readers joining after it find it there.
    """

    def __init__(self, store: RedisStore, chat_id: str, after: int) -> None:
        self.store = store
        self.chat_id = chat_id
        self.key = store._key(chat_id, "s")
        self.last = after
        self.first = after + 1  # the seq of entries[0]
        self.entries: list[Entry] = []
        self.signal = Signal()
        self.error: StoreUnavailableError | None = None
        self.used = True  # read from since the follower last looked: it is wanted
        self.idle_since = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def covers(self, after: int) -> bool:
        return bool(self.entries) and self.first <= after + 1 <= self.last + 1

    def slice(self, after: int, limit: int) -> list[Entry]:
        self.used = True
        start = after + 1 - self.first
        return self.entries[start : start + limit]

    def prepend(self, older: list[Entry]) -> None:
        """Put entries just read from Redis in front of the window, where they meet it."""
        if not self.entries or not older or len(self.entries) >= _WINDOW:
            return
        first = older[0].seq
        if first < self.first <= older[-1].seq + 1:
            self.entries[:0] = older[: self.first - first]
            self.first = first

    def put(self, new: list[Entry]) -> None:
        """Entries that follow the window's last (read, or appended by this process),
        added and their readers woken; any the window has already are skipped."""
        last = self.last
        if new and new[0].seq <= last:
            new = [entry for entry in new if entry.seq > last]
        if not new or new[0].seq != last + 1:
            return  # nothing new, or not where the window ends: the XREAD brings it
        entries = self.entries
        entries.extend(new)
        self.last = new[-1].seq
        if len(entries) > 2 * _WINDOW:
            # Trimmed in steps of _WINDOW, so that the copy is paid once per _WINDOW entries.
            drop = len(entries) - _WINDOW
            del entries[:drop]
            self.first += drop
        self.signal.fire()

    async def _run(self) -> None:
        store = self.store
        while True:
            # Redis unavailable: every reader is told, and the follower tries again,
            # for as long as it has readers (or lingers).
            found = await _FOLLOW_RETRY.call(self._read, retries=None, retryable=self._failed)
            if found is None:
                break
            self.error = None
            if not found:
                continue
            self.put([_entry(entry_id, fields) for entry_id, fields in found[0][1]])
        if store._followers.get(self.chat_id) is self:
            del store._followers[self.chat_id]

    async def _read(self) -> Any:
        """One ``XREAD BLOCK``: what it found (empty when nothing came), or ``None``
        when nobody reads the chat here any more and the follower's linger is over."""
        now = time.monotonic()
        # Readers busy writing wait on nothing, yet they read: either says "wanted".
        if self.signal or self.used:
            self.used = False
            self.idle_since = now
        elif now - self.idle_since > _LINGER:
            return None
        found = await self.store._blocking.xread(
            {self.key: f"0-{self.last}"}, count=1024, block=_BLOCK_MS
        )
        return found or []

    def _failed(self, exc: Exception) -> bool:
        """Tell the readers waiting that Redis is unavailable; always worth another try."""
        self.error = self.store._unavailable(exc)
        self.signal.fail(self.error)
        return True


def _shown(url: str) -> str:
    """The URL fit to show: no credentials, and no query (``?password=`` is one way
    redis-py takes a password, ``?username=`` another).

    >>> _shown("redis://:pw@db:6379/0?password=pw2")
    'redis://***@db:6379/0?***'
    """
    shown = redact_url(url)
    base, mark, _ = shown.partition("?")
    return f"{base}?***" if mark else base


class RedisStore(Store):
    """Each chat's log in a Redis Stream, and its producer lease in Redis.

    Any number of relay processes may share one Redis: exactly one of them
    produces a chat's turn (the lease holder), every one of them serves its
    readers. Needs the ``relay`` extra (``pip install 'handinger-stream[relay]'``).

    Within one process, a chat's live readers share one ``XREAD BLOCK`` loop
    and a window of its last entries, so a thousand readers cost Redis one
    blocked read. Connections are pooled (``max_connections``).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = DEFAULT_PREFIX,
        max_events: int = MAX_EVENTS,
        keep_seconds: float = KEEP_SECONDS,
        chat_seconds: float = CHAT_SECONDS,
        max_connections: int = 64,
        socket_timeout: float = 5.0,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:  # pragma: no cover - the extra is in every test environment
            raise ImportError(
                "RedisStore needs the redis package: pip install 'handinger-stream[relay]'"
            ) from None
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.url = _shown(url)  # shown in its repr and its errors
        self.prefix = prefix
        self.max_events = max_events
        self.keep_seconds = keep_seconds
        self.chat_seconds = max(chat_seconds, keep_seconds)
        # One retry, at once, on a fresh connection: after Redis restarted, the pooled
        # connections are dead. Safe, since every script is idempotent (appends carry
        # their seq, acquires their nonce).
        options: dict[str, Any] = {
            "socket_connect_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 1),
        }
        try:
            # Readers wait their turn for a pooled connection (timeout=None): a
            # thousand catching up at once is load, not Redis being unavailable,
            # which shows as a failure to connect or to answer.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=None,
                socket_timeout=socket_timeout,
                **options,
            )
        except ValueError as exc:  # what redis says of a URL it cannot use
            raise InvalidRequestError(f"not a Redis URL: {self.url!r} ({exc})") from None
        self._redis: redis.asyncio.Redis = aioredis.Redis(connection_pool=pool)
        # Blocked XREADs wait longer than a command may: their own connections, one per
        # chat followed. (redis-py's own pool bound, 100, refuses the 101st outright:
        # a process relaying more chats than that would fail them all.)
        self._blocking: redis.asyncio.Redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=_MAX_FOLLOWED,
                timeout=None,
                socket_timeout=socket_timeout + _BLOCK_MS / 1000,
                **options,
            )
        )
        # Producers write on connections of their own, so that readers can never
        # starve the lease renewals and appends (a starved producer loses its lease);
        # a thousand producing at once wait their turn for one, as readers do.
        self._writer: redis.asyncio.Redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=None,
                socket_timeout=socket_timeout,
                **options,
            )
        )
        self._acquire = self._writer.register_script(_ACQUIRE)
        self._append = self._writer.register_script(_APPEND)
        self._finish = self._writer.register_script(_FINISH)
        self._renew = self._writer.register_script(_RENEW)
        self._release = self._writer.register_script(_RELEASE)
        self._admit = self._writer.register_script(_ADMIT)
        self._drop = self._writer.register_script(_DROP)
        self._followers: dict[str, _Follower] = {}
        self._reading: dict[tuple[str, int, int], asyncio.Future[list[Entry]]] = {}
        self._looking: dict[str, Any] = {}  # chat id -> its batched record reads

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    def _key(self, chat_id: str, kind: str) -> str:
        return f"{self.prefix}{chat_id}:{kind}"

    def _keys(self, chat_id: str) -> tuple[str, str, str, str]:
        """meta, lease, stream, active set."""
        return (
            self._key(chat_id, "m"),
            self._key(chat_id, "l"),
            self._key(chat_id, "s"),
            f"{self.prefix}active",
        )

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        error = StoreUnavailableError(f"Redis at {self.url} is unavailable: {exc}")
        error.__cause__ = exc
        return error

    async def _call(self, call: Awaitable[_T]) -> _T:
        """Await a Redis call; its failures to connect or answer become StoreUnavailableError,
        a refusal to write (``OOM``: ``maxmemory`` reached under ``noeviction``) StoreFullError."""
        from redis.exceptions import (
            ConnectionError,
            OutOfMemoryError,
            ReadOnlyError,
            ResponseError,
            TimeoutError,
        )

        try:
            return await call
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError as exc:
            text = str(exc)
            refused = isinstance(exc, (OutOfMemoryError, ReadOnlyError))
            if refused or "OOM" in text or "MISCONF" in text or "READONLY" in text:
                full = StoreFullError(f"Redis at {self.url} refuses writes: {text[:200]}")
                raise full from exc
            raise

    async def ping(self) -> None:
        """Check that Redis answers; :class:`StoreUnavailableError` if not."""
        await self._call(self._redis.ping())

    async def aclose(self) -> None:
        followers = list(self._followers.values())
        self._followers.clear()
        for follower in followers:
            follower.task.cancel()
        for follower in followers:
            with contextlib.suppress(BaseException):
                await follower.task
        # Clients given a pool leave it open when closed: each pool is disconnected too.
        for client in (self._blocking, self._writer, self._redis):
            await client.aclose()
            await client.connection_pool.disconnect()

    # -- chats ------------------------------------------------------------

    async def chat(self, chat_id: str) -> ChatInfo | None:
        # A thousand readers joining at once ask the same: one round trip for all who
        # asked before it went out (batched, not joined: a record read before a caller
        # asked could miss the turn it knows began).
        return await batched(self._looking, chat_id, lambda: self._chat(chat_id))

    async def _chat(self, chat_id: str) -> ChatInfo | None:
        meta, lease, _, _ = self._keys(chat_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta)
            pipe.exists(lease)
            fields, leased = await self._call(pipe.execute())
        return self._info(chat_id, fields, bool(leased))

    @staticmethod
    def _info(chat_id: str, fields: dict[bytes, bytes], leased: bool) -> ChatInfo | None:
        if not fields:
            return None
        updated = fields.get(b"updated")
        return ChatInfo(
            chat_id=chat_id,
            worker_id=_text(fields.get(b"worker")),
            active=fields.get(b"active") == b"1",
            turn_start=int(fields.get(b"turn_start", b"1")),
            last_seq=int(fields.get(b"last_seq", b"0")),
            last_upstream_id=_text(fields.get(b"last_up")),
            status=(fields.get(b"status") or b"pending").decode(),
            producer=_text(fields.get(b"producer")),
            leased=leased,
            error=_text(fields.get(b"error")),
            updated_at=None if updated is None else int(updated) / 1000,
            owner=_text(fields.get(b"owner")),
        )

    async def fleet(self) -> list[ChatInfo]:
        """Every chat with a turn running in any relay process on this Redis, newest first.

        A turn whose producer died shows ``leased=False`` (and stays listed
        until a reader takes it over, or it is finished).
        """
        active_key = f"{self.prefix}active"
        names: list[bytes] = await self._call(
            cast("Awaitable[list[bytes]]", self._redis.zrevrange(active_key, 0, -1))
        )
        if not names:
            return []
        chat_ids = [name.decode() for name in names]
        async with self._redis.pipeline(transaction=False) as pipe:
            for chat_id in chat_ids:
                pipe.hgetall(self._key(chat_id, "m"))
                pipe.exists(self._key(chat_id, "l"))
            replies = await self._call(pipe.execute())
        found: list[ChatInfo] = []
        stale: list[str] = []
        for i, chat_id in enumerate(chat_ids):
            info = self._info(chat_id, replies[2 * i], bool(replies[2 * i + 1]))
            if info is None or not info.active:
                stale.append(chat_id)
            else:
                found.append(info)
        if stale:
            await self._call(self._redis.zrem(active_key, *stale))
        return found

    # -- owners and limits ------------------------------------------------------

    async def owner(self, chat_id: str) -> str | None:
        found = await self._call(
            cast("Awaitable[bytes | None]", self._redis.hget(self._key(chat_id, "m"), "owner"))
        )
        return _text(found)

    def _principal_keys(self, principal: str) -> list[str]:
        """turns, rate, chats: named by a digest, so that no principal can shape a key."""
        digest = hashlib.sha256(principal.encode()).hexdigest()[:32]
        return [f"{self.prefix}principal:{digest}:{kind}" for kind in ("turns", "rate", "chats")]

    async def admit_turn(self, chat_id: str, principal: str, quota: Quota) -> Admission:
        check_principal(principal)

        def limit(value: int | None) -> str:
            return "" if value is None else str(value)

        reply = await self._call(
            self._admit(
                keys=[self._key(chat_id, "m"), *self._principal_keys(principal)],
                args=[
                    principal,
                    self.prefix,
                    chat_id,
                    limit(quota.turns),
                    limit(quota.rate),
                    max(int(quota.window * 1000), 1),
                    limit(quota.chats),
                    max(int(quota.hold * 1000), 1),
                    int(self.chat_seconds * 1000),
                    secrets.token_hex(8),
                ],
            )
        )
        refused = reply[0].decode()
        if not refused:
            return Admission(new_chat=bool(reply[2]))
        wait = int(reply[1])
        retry_after = _BUSY_RETRY if wait < 0 else max(wait / 1000, 1.0)
        return Admission(refused, 0.0 if refused == "owner" else retry_after)

    async def drop_admission(self, chat_id: str, principal: str) -> None:
        turns = self._principal_keys(principal)[0]
        await self._call(self._drop(keys=[turns], args=[chat_id]))

    # -- producing ----------------------------------------------------------

    async def _lease(self, chat_id: str, holder: str, ttl: float, mode: str) -> Lease | None:
        nonce = secrets.token_hex(8)
        meta, lease_key, stream, active = self._keys(chat_id)
        reply = await self._call(
            self._acquire(
                keys=[meta, lease_key, active, stream],
                args=[chat_id, holder, int(ttl * 1000), nonce, mode],
            )
        )
        if int(reply[0]) < 0:
            return None
        fence, last_seq, last_up, worker, turn_start = reply
        return Lease(
            chat_id=chat_id,
            token=f"{int(fence)} {nonce}",
            fence=int(fence),
            holder=holder,
            ttl=ttl,
            last_seq=int(last_seq),
            last_upstream_id=_text(last_up),
            worker_id=_text(worker),
            turn_start=int(turn_start),
            new_turn=mode == "turn",
        )

    async def begin_turn(self, chat_id: str, *, holder: str, ttl: float) -> Lease:
        lease = await self._lease(chat_id, holder, ttl, "turn")
        if lease is None:
            raise ChatBusyError(f"chat {chat_id!r} has a turn running")
        return lease

    async def take_over(self, chat_id: str, *, holder: str, ttl: float) -> Lease | None:
        return await self._lease(chat_id, holder, ttl, "takeover")

    def _lost(self, lease: Lease) -> LeaseLostError:
        return LeaseLostError(f"the producer lease of chat {lease.chat_id!r} was taken")

    async def set_worker(self, lease: Lease, worker_id: str) -> None:
        meta, lease_key, _, _ = self._keys(lease.chat_id)
        args: list[str | int] = [lease.token, int(lease.ttl * 1000), worker_id]
        ok = await self._call(self._renew(keys=[meta, lease_key], args=args))
        if not ok:
            raise self._lost(lease)
        lease.worker_id = worker_id

    async def renew(self, lease: Lease) -> None:
        meta, lease_key, _, _ = self._keys(lease.chat_id)
        ok = await self._call(
            self._renew(keys=[meta, lease_key], args=[lease.token, int(lease.ttl * 1000), ""])
        )
        if not ok:
            raise self._lost(lease)

    async def append(self, lease: Lease, entries: Sequence[NewEntry]) -> None:
        if not entries:
            return
        args: list[Any] = [
            lease.token,
            int(lease.ttl * 1000),
            lease.last_seq + 1,
            self.max_events,
            lease.chat_id,
        ]
        upstream_id = lease.last_upstream_id
        for new in entries:
            args += (new.data, new.upstream_id or "", b"1" if new.snapshot else b"0")
            if new.upstream_id:
                upstream_id = new.upstream_id
        meta, lease_key, stream, active = self._keys(lease.chat_id)
        keys = [meta, lease_key, stream, active]
        last = int(await self._call(self._append(keys=keys, args=args)))
        if last == -1:
            raise self._lost(lease)
        if last == -2:
            raise LeaseLostError(
                f"chat {lease.chat_id!r}: the log is not where this producer left it"
            )
        first = lease.last_seq + 1
        lease.last_seq = last
        lease.last_upstream_id = upstream_id
        if last == first + len(entries) - 1:
            # This process's readers get them now, not after the XREAD brings them back.
            self._appended(
                lease.chat_id,
                [
                    Entry(first + i, new.data, new.upstream_id or None, new.snapshot)
                    for i, new in enumerate(entries)
                ],
            )

    def _appended(self, chat_id: str, entries: list[Entry]) -> None:
        follower = self._followers.get(chat_id)
        if follower is not None and follower.error is None:
            follower.put(entries)

    async def finish(self, lease: Lease, error: str | None = None) -> None:
        meta, lease_key, stream, active = self._keys(lease.chat_id)
        seq = int(
            await self._call(
                self._finish(
                    keys=[meta, lease_key, stream, active],
                    args=[
                        lease.token,
                        int(lease.ttl * 1000),
                        self.max_events,
                        lease.chat_id,
                        int(self.keep_seconds * 1000),
                        int(self.chat_seconds * 1000),
                        error or "",
                        "1" if error is not None else "0",
                    ],
                )
            )
        )
        if seq == -1:
            raise self._lost(lease)
        if seq > 0:
            if seq == lease.last_seq + 1:
                self._appended(lease.chat_id, [Entry(seq, end=True, error=error)])
            lease.last_seq = seq

    async def set_message_id(self, lease: Lease, message_id: str) -> None:
        key = self._key(lease.chat_id, "q")
        async with self._writer.pipeline(transaction=True) as pipe:
            pipe.rpush(key, message_id)
            pipe.ltrim(key, -10_000, -1)
            pipe.pexpire(key, int(self.chat_seconds * 1000))
            await self._call(pipe.execute())

    async def message_ids(self, chat_id: str) -> list[str]:
        found = await self._call(
            cast("Awaitable[list[bytes]]", self._redis.lrange(self._key(chat_id, "q"), 0, -1))
        )
        return [value.decode() for value in found]

    async def release(self, lease: Lease) -> None:
        await self._call(self._release(keys=[self._key(lease.chat_id, "l")], args=[lease.token]))

    # -- reading -------------------------------------------------------------

    def read_ready(self, chat_id: str, after: int, limit: int) -> list[Entry] | None:
        follower = self._followers.get(chat_id)
        if follower is not None and follower.error is None and follower.covers(after):
            return follower.slice(after, limit)
        return None

    async def read(self, chat_id: str, after: int, limit: int) -> list[Entry]:
        ready = self.read_ready(chat_id, after, limit)
        if ready is not None:
            return ready
        # Readers joining together ask for the same history: one round trip serves them
        # all (entries never change, so an answer begun a moment earlier is as good).
        entries = await joined(
            self._reading, (chat_id, after, limit), lambda: self._read_range(chat_id, after, limit)
        )
        follower = self._followers.get(chat_id)
        if follower is not None and follower.error is None:
            follower.prepend(entries)
        return list(entries)  # each caller its own list: readers cut theirs

    async def _read_range(self, chat_id: str, after: int, limit: int) -> list[Entry]:
        meta, _, stream, _ = self._keys(chat_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xrange(stream, f"0-{after + 1}", "+", count=limit)
            pipe.hget(meta, "last_seq")
            found, last_seq = await self._call(pipe.execute())
        entries = [_entry(entry_id, fields) for entry_id, fields in found]
        first = entries[0].seq if entries else int(last_seq or 0) + 1
        if first > after + 1:
            raise EntriesGoneError(
                f"chat {chat_id!r}: the entries after {after} are no longer kept"
                + (f" (the oldest kept is {first})" if entries else "")
            )
        return entries

    async def wait(self, chat_id: str, after: int, timeout: float) -> bool:
        follower = self._followers.get(chat_id)
        if follower is None or follower.task.done():
            follower = self._followers[chat_id] = _Follower(self, chat_id, after)
        if follower.error is not None:
            raise follower.error
        if follower.last > after:
            return True
        await follower.signal.wait(timeout)
        return follower.last > after
