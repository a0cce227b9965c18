"""Real servers for the relay's tests: redis-server, relay processes, and an SSE reader;
and the fixtures that start them, for the modules that import them (with an
emulator at a pace a turn takes a few seconds at).

redis-server is Debian's (``./scripts/test`` installs it when missing); each
fixture starts it on a free loopback port with an append-only file synced on
every write (so a restart keeps what was written), and stops it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from handinger_stream.emulator import Emulator
from handinger_stream.protocol.sse import SSEDecoder
from tests.helpers.emulators import emulator_fixture


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server process on a free port; ``restart()`` keeps its data (AOF)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(binary, os.X_OK):
            pytest.fail(
                "redis-server is needed for the relay's tests and was not found: "
                "install it (Debian: apt-get install -y redis-server)"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.directory / "redis.log").read_text(errors="replace")[-1500:]
                pytest.fail(f"redis-server exited ({self.process.returncode}):\n{tail}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        pytest.fail("redis-server did not answer PING in 20 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="handinger-redis-"))
    server = RedisServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


class RelayProcess:
    """``python -m handinger_stream relay`` in a process of its own."""

    def __init__(
        self,
        *,
        base_url: str,
        redis_url: str | None,
        lease_seconds: float = 1.0,
        api_key: str = "sk-relay-test-key",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="handinger-relay-", suffix=".log")[1])
        args = [sys.executable, "-m", "handinger_stream", "relay", "--port", "0"]
        args += ["--base-url", base_url, "--lease-seconds", str(lease_seconds)]
        # A module's tests share one relay and one principal (no token: everyone is the
        # same anonymous principal): the per-principal limits are raised for that load.
        args += ["--turns-per-minute", "100000", "--max-concurrent-turns", "1000"]
        args += ["--max-chats", "100000", *extra]
        if redis_url:
            args += ["--redis", redis_url]
        env = {**os.environ, "HANDINGER_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
        env.pop("HANDINGER_BASE_URL", None)
        env.pop("HANDINGER_RELAY_TOKEN", None)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"relay on (http://\S+/)", self.log())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        said = self.log()[-2000:]  # read before stop() removes the log
        self.stop()
        pytest.fail(f"the relay did not start:\n{said}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no goodbye, its lease left to expire."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)


@dataclass
class SSEReply:
    """What an SSE request got: status, headers, and the events (data, id) in order."""

    status: int
    headers: Mapping[str, str]
    events: list[tuple[str | None, bytes]] = field(default_factory=list)
    comments: int = 0
    complete: bool = False  # ended with [DONE]

    @property
    def data(self) -> list[bytes]:
        return [data for _, data in self.events]

    @property
    def chunks(self) -> list[Any]:
        """Each event's data as JSON (a snapshot re-encoded may order its keys otherwise)."""
        return [msgspec.json.decode(data) for _, data in self.events]

    @property
    def last_id(self) -> str | None:
        return next((i for i, _ in reversed(self.events) if i is not None), None)


async def read_sse(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    stop_after: int | None = None,
    within: float = 60.0,
) -> SSEReply:
    """Read an event stream until ``[DONE]``, its end, or ``stop_after`` events (then leave)."""
    with anyio.fail_after(within):
        return await _read_sse(http, method, url, json, headers, stop_after)


async def _read_sse(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    json: Any,
    headers: Mapping[str, str] | None,
    stop_after: int | None,
) -> SSEReply:
    async with http.request(method, url, json=json, headers=headers) as response:
        reply = SSEReply(response.status, response.headers)
        if response.status != 200:
            return reply
        decoder = SSEDecoder()
        async for chunk in response.content.iter_any():
            reply.comments += chunk.count(b"\n: ") + chunk.startswith(b": ")
            for event in decoder.feed(chunk):
                if event.raw == b"[DONE]":
                    reply.complete = True
                    return reply
                # An id of ours is on every event but an error's: "sticky" ids do not count.
                has_id = event.id is not None and (not reply.events or event.id != reply.last_id)
                reply.events.append((event.id if has_id else None, event.raw))
                if stop_after is not None and len(reply.events) >= stop_after:
                    return reply
    return reply


async def emulator_replay(base_url: str, worker_id: str) -> list[Any]:
    """Every event the emulator stored for the worker (its replay's data, as JSON), in order."""
    async with aiohttp.ClientSession() as http:
        reply = await read_sse(
            http,
            "GET",
            f"{base_url}/api/workers/{worker_id}?stream=true",
            headers={"authorization": "Bearer any", "accept": "text/event-stream"},
        )
    assert reply.status == 200 and reply.complete
    return reply.chunks


def chat_body(chat_id: str, text: str) -> dict[str, Any]:
    """What the AI SDK's DefaultChatTransport posts for a new user message."""
    return {
        "id": chat_id,
        "messages": [
            {"id": f"u-{chat_id}", "role": "user", "parts": [{"type": "text", "text": text}]}
        ],
        "trigger": "submit-message",
        "messageId": None,
    }


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


paced = emulator_fixture(tokens_per_second=40, keepalive_interval=0.5)


@pytest.fixture
def relays(redis: RedisServer, paced: Emulator) -> Iterator[Callable[[], RelayProcess]]:
    """Start relay processes sharing the Redis; all are stopped after the test."""
    started: list[RelayProcess] = []

    def start() -> RelayProcess:
        relay = RelayProcess(base_url=paced.base_url, redis_url=redis.url, lease_seconds=1.0)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
