"""The command line against loopback servers: as a subprocess, or its ``main`` in this process."""

from __future__ import annotations

import json
import subprocess
import sys

from handinger_stream import DEFAULT_BASE_URL
from handinger_stream.emulator import Emulator
from tests.cli.helpers import cli, cli_here, environment
from tests.conftest import API_KEY, Canned, RawServer


def test_run_prints_the_answer_and_a_summary(emulator: Emulator) -> None:
    result = cli(
        "run", "What's the weather in Barcelona?", "--budget", "low", base_url=emulator.base_url
    )
    assert result.returncode == 0, result.stderr
    assert "weather in Barcelona" in result.stdout
    assert "completed" in result.stderr and "usage:" in result.stderr and "cost: $" in result.stderr
    assert "https://" in result.stderr  # sources with their URLs
    assert API_KEY not in result.stdout + result.stderr


def test_json_lines_parse_and_end_with_the_worker(emulator: Emulator) -> None:
    result = cli("run", "json please", "--json", "--base-url", emulator.base_url)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["type"] == "data-worker"
    assert {"start", "text-delta", "finish"} <= {line.get("type") for line in lines}
    # One object per event, in the wire's own keys: no eventId, no nulls added.
    assert all("eventId" not in line and "event_id" not in line for line in lines)
    final = lines[-1]
    assert final["type"] == "data-worker" and final["transient"] is True
    worker = final["data"]
    assert worker["object"] == "worker" and worker["status"] == "completed"
    assert worker["output_text"] == "".join(
        x["delta"] for x in lines if x.get("type") == "text-delta"
    )


def test_embedded_emulator_when_nothing_is_configured() -> None:
    result = cli_here("run", "offline?", "--tokens-per-second", "0", key=None)
    assert result.returncode == 0, result.stderr
    assert "embedded emulator" in result.stderr.splitlines()[0]
    assert result.stdout.strip()


def test_worker_failure_exits_1(raw_server: RawServer) -> None:
    raw_server.serve(
        Canned(
            [
                b'data: {"type":"start"}\n\ndata: {"type":"text-start","id":"t"}\n\n',
                b'data: {"type":"text-delta","id":"t","delta":"half an answer"}\n\n',
                b'data: {"type":"error","errorText":"the model gave up"}\n\ndata: [DONE]\n\n',
            ]
        )
    )
    result = cli_here("run", "x", base_url=raw_server.base_url)
    assert result.returncode == 1
    assert "half an answer" in result.stdout
    assert "the model gave up" in result.stderr and "Traceback" not in result.stderr


def test_usage_errors_exit_2() -> None:
    assert cli_here("run", "x", "--budget", "huge").returncode == 2
    assert cli_here("fly").returncode == 2
    result = cli_here("run", "   ", base_url="http://127.0.0.1:9")
    assert result.returncode == 2 and "empty" in result.stderr


def test_connection_and_auth_problems_exit_3(emulator: Emulator) -> None:
    result = cli_here("run", "x", base_url="http://127.0.0.1:9")  # nothing listening
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    result = cli_here("run", "x", key="sk-wrong-key", base_url=emulator.base_url)
    assert result.returncode == 3 and "401" in result.stderr and "sk-wrong-key" not in result.stderr
    result = cli_here("run", "x", key=None, base_url=emulator.base_url)
    assert result.returncode == 3 and "HANDINGER_API_KEY" in result.stderr


def test_serve_runs_the_emulator_until_interrupted() -> None:
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "handinger_stream",
            "serve",
            "--port",
            str(port),
            "--api-key",
            "k",
            "--tokens-per-second",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert proc.stderr is not None
        assert f"127.0.0.1:{port}" in proc.stderr.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/api/workers",
                    json={"input": "x"},
                    headers={"authorization": "Bearer k"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.status_code == 200 and r.json()["object"] == "worker"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) in (0, 130)
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
        proc.stderr.close()


def test_relay_with_only_a_key_says_it_relays_the_service() -> None:
    # No base URL given: the relay reads workers from the real service, and says which.
    proc = subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "relay", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=environment(key="sk-any"),
    )
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        proc.stderr.close()
    assert f"workers at {DEFAULT_BASE_URL};" in said, said
