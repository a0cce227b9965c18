"""The command line without rough edges (issue 23, item 5): the same options everywhere,
help for everything, error lines that start with ``error:`` and give command-line advice,
prompts from stdin, options refused where they do not apply, servers that stop alike."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handinger_stream._version import __version__
from handinger_stream.cli.main import _parser
from handinger_stream.emulator import Emulator
from tests.cli.helpers import cli, cli_here, environment, json_lines
from tests.conftest import API_KEY

# The subcommands that talk to the API ("webhooks listen" only receives deliveries).
API_COMMANDS = [
    ["run"], ["record"], ["watch"], ["relay"], ["tasks", "show"], ["tasks", "delete"],
    ["workers", "create"], ["workers", "update"], ["workers", "delete"],
    ["schedules", "create"], ["schedules", "list"], ["schedules", "cancel"],
    ["webhooks", "set"], ["webhooks", "show"], ["webhooks", "executions"],
]  # fmt: skip


def _commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every subcommand's parser, at any depth, with the words that reach it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, child in action.choices.items():
                yield (*words, word), child
                yield from _commands(child, (*words, word))


def test_every_subcommand_and_option_is_described_with_the_exit_codes() -> None:
    found = list(_commands(_parser()))
    assert {words for words, _ in found} >= {tuple(w) for w in API_COMMANDS} | {("serve",)}
    for words, parser in found:
        name = " ".join(words)
        assert parser.description, f"{name}: no description"
        assert "exit codes: 0" in (parser.epilog or ""), f"{name}: no exit codes"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name} {action.dest}: no help"


@pytest.mark.parametrize("words", API_COMMANDS, ids=" ".join)
def test_the_common_options_on_every_subcommand_that_talks_to_the_api(words: list[str]) -> None:
    parser = dict(_commands(_parser()))[tuple(words)]
    options = {option for action in parser._actions for option in action.option_strings}
    assert {"--api-key", "--base-url", "--json"} <= options


def test_version() -> None:
    shown = cli_here("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"handinger-stream {__version__}"


# -- error lines ----------------------------------------------------------------------


def test_every_error_line_starts_with_error_and_speaks_of_the_command_line() -> None:
    cases = [
        cli_here("watch", key=None),  # nothing to watch
        cli_here("watch", "--create", "2", "Hi", key=None, base_url="http://127.0.0.1:9"),
        cli_here("run", "x", key=None, base_url="http://127.0.0.1:9"),
        cli_here("watch", "wrk_1", key=None),
    ]
    for done in cases:
        assert done.returncode in (2, 3), done
        assert done.stderr.startswith("error: "), done.stderr
        assert "api_key=" not in done.stderr and "Handinger(" not in done.stderr
    assert "--api-key" in cases[1].stderr and "HANDINGER_API_KEY" in cases[1].stderr


def test_a_taken_port_is_an_error_line(emulator: Emulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        relay = cli("relay", "--port", port, base_url=emulator.base_url)
        serve = cli_here("serve", "--port", port)
    for done in (relay, serve):
        assert done.returncode == 3, done.stderr
        assert done.stderr.startswith("error: cannot listen on 127.0.0.1:"), done.stderr


def test_a_connection_error_is_one_short_line() -> None:
    done = cli_here("run", "x", base_url="http://127.0.0.1:9")
    assert done.returncode == 3
    (line,) = done.stderr.splitlines()
    assert line == "error: cannot reach http://127.0.0.1:9: connection refused"


def test_a_broken_stream_that_cannot_resume_is_one_line_without_reprs(tmp_path: Path) -> None:
    serve = subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    assert serve.stderr is not None
    url = serve.stderr.readline().split(" on ")[1].split()[0]
    with subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "run", "--json", "A long answer"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(API_KEY, url),
    ) as run:
        assert run.stdout is not None and run.stderr is not None
        while json.loads(run.stdout.readline())["type"] != "text-delta":
            pass
        serve.kill()  # gone at once, without a word: the connection drops
        serve.wait(30)
        serve.stderr.close()
        rest, err = run.stdout.read(), run.stderr.read()
        assert run.wait(120) == 3, err
    (line,) = err.splitlines()
    assert line.startswith("error: worker wrk_") and "could not be resumed" in line
    assert "connection refused" in line and "Error(" not in line and "Errno" not in line
    final = json_lines(rest)[-1]
    assert final["type"] == "data-worker" and final["outcome"] == "incomplete"
    assert final["error"] == "the stream broke and could not be resumed (connection refused)"


def test_a_refused_key_names_its_source_never_the_key() -> None:
    with Emulator(api_key="the-right-key") as strict:
        flag = cli_here("run", "x", "--api-key", "sk-flag-nope", key=None, base_url=strict.base_url)
        env = cli_here("run", "x", key="sk-env-nope", base_url=strict.base_url)
        watched = cli_here("watch", "wrk_1", key="sk-env-nope", base_url=strict.base_url)
    assert flag.returncode == env.returncode == watched.returncode == 3
    assert "the API key from --api-key was refused" in flag.stderr
    assert "the API key from HANDINGER_API_KEY was refused" in env.stderr
    assert "the API key from HANDINGER_API_KEY was refused" in watched.stderr
    for done in (flag, env, watched):
        assert "nope" not in done.stdout + done.stderr


# -- the prompt, and options that do not apply ---------------------------------------------


def test_the_prompt_from_stdin(emulator: Emulator) -> None:
    dashed = cli_here(
        "run", "-", "--json", base_url=emulator.base_url, stdin="Weather in Girona?\n"
    )
    piped = cli_here("run", "--json", base_url=emulator.base_url, stdin="Weather in Girona?\n")
    for done in (dashed, piped):
        assert done.returncode == 0, done.stderr
        final = json_lines(done.stdout)[-1]
        user = final["data"]["messages"][0]["parts"][0]["text"]
        assert user == "Weather in Girona?"
    empty = cli_here("run", "-", base_url=emulator.base_url, stdin="\n")
    assert empty.returncode == 2 and empty.stderr.startswith("error: the prompt must not be empty")
    nothing = cli_here("run", base_url=emulator.base_url, stdin="")
    assert nothing.returncode == 2 and "a prompt is required" in nothing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("run", "x", "--tokens-per-second", "5"),
        ("record", "--out", "never.json", "x", "--tokens-per-second", "5"),
        ("watch", "wrk_1", "--tokens-per-second", "5"),
        ("watch", "wrk_1", "--budget", "low"),
    ],
    ids=["run", "record", "watch", "watch-budget"],
)
def test_options_that_do_not_apply_are_refused(emulator: Emulator, args: tuple[str, ...]) -> None:
    done = cli_here(*args, base_url=emulator.base_url)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


def test_relay_refuses_tokens_per_second_with_a_base_url(emulator: Emulator) -> None:
    done = cli("relay", "--tokens-per-second", "5", "--port", "0", base_url=emulator.base_url)
    assert done.returncode == 2 and done.stderr.startswith("error: --tokens-per-second")


def test_an_empty_cassette_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"version": 1, "interactions": []}))
    done = cli_here("serve", "--port", "0", "--cassette", str(empty))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "holds no recorded request" in done.stderr


# -- servers stop alike -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["relay", "serve", "webhooks listen"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_servers_stop_alike(command: str, signum: signal.Signals) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", *command.split(), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment() | {"HANDINGER_WEBHOOK_TOKEN": "whsec-test"},
    ) as server:
        assert server.stderr is not None
        for line in server.stderr:
            if "Ctrl-C to stop" in line:
                break
        server.send_signal(signum)
        code = server.wait(30)
        rest = server.stderr.read()
    assert code == (130 if signum == signal.SIGINT else 0), rest
    assert "Traceback" not in rest
