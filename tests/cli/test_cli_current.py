"""The command line of today's API (tasks, worker templates, schedules, webhooks) against the
emulator over loopback HTTP: ``main`` in this process, ``webhooks listen`` in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import pytest

from handinger_stream.cli.main import _parser
from handinger_stream.emulator import Emulator
from tests.cli.helpers import cli_here, environment, json_lines
from tests.conftest import API_KEY

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


def _template(emulator: Emulator, *options: str) -> str:
    """A new worker template's id, as ``workers create`` prints it on stdout."""
    made = cli_here(
        "workers", "create", "--instructions", "Be brief", *options, base_url=emulator.base_url
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def _task(emulator: Emulator, worker_id: str, prompt: str = "What is new?") -> str:
    """Run a task on the template; its id, from the final Worker's messages."""
    done = cli_here("run", "--worker", worker_id, prompt, "--json", base_url=emulator.base_url)
    assert done.returncode == 0, done.stderr
    final = json_lines(done.stdout)[-1]
    assert final["type"] == "data-worker" and final["data"]["status"] == "completed"
    return str(final["data"]["id"])


# -- run --worker / --task ----------------------------------------------------------


def test_run_a_task_on_a_template_then_a_follow_up_turn(emulator: Emulator) -> None:
    worker_id = _template(emulator)
    first = cli_here(
        "run", "--worker", worker_id, "--task", "tsk_cli_1", "Plan a trip", "--json",
        base_url=emulator.base_url,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    lines = json_lines(first.stdout)
    assert {"start", "text-delta", "finish"} <= {line.get("type") for line in lines}
    assert lines[-1]["data"]["output_text"]

    again = cli_here("run", "--task", "tsk_cli_1", "Cheaper?", base_url=emulator.base_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() and "completed" in again.stderr
    assert "  task tsk_cli_1" in again.stderr.splitlines()  # the summary names the task

    shown = cli_here("tasks", "show", "tsk_cli_1", "--json", base_url=emulator.base_url)
    assert shown.returncode == 0, shown.stderr
    (found,) = json_lines(shown.stdout)
    assert found["task"]["id"] == "tsk_cli_1" and found["task"]["workerId"] == worker_id
    assert [turn["input"] for turn in found["turns"]] == ["Plan a trip", "Cheaper?"]
    assert [turn["seq"] for turn in found["turns"]] == [1, 2]
    assert found["outcome"] == "completed" and found["error"] is None  # at the top level


def test_run_worker_needs_the_service_and_an_existing_template(emulator: Emulator) -> None:
    offline = cli_here("run", "--worker", "wrk_1", "Hi", key=None)
    assert offline.returncode == 2 and offline.stderr.startswith("error: ")
    # A task id of one's own choosing starts a task: the embedded emulator can do that.
    chosen = cli_here("run", "--task", "tsk_mine", "Hi", "--tokens-per-second", "0", key=None)
    assert chosen.returncode == 0, chosen.stderr
    assert "embedded emulator" in chosen.stderr and chosen.stdout.strip()
    missing = cli_here("run", "--worker", "wrk_nope", "Hi", base_url=emulator.base_url)
    assert missing.returncode == 2, missing.stderr
    assert "Traceback" not in missing.stderr and "error: " in missing.stderr


# -- tasks ----------------------------------------------------------------------------


def test_tasks_show_as_a_table_and_delete(emulator: Emulator) -> None:
    worker_id = _template(emulator)
    cli_here("run", "--worker", worker_id, "--task", "tsk_cli_table", "Hi there", "--json",
             base_url=emulator.base_url)  # fmt: skip
    shown = cli_here("tasks", "show", "tsk_cli_table", base_url=emulator.base_url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("task tsk_cli_table · completed · worker " + worker_id)
    assert lines[2].split() == ["seq", "status", "credits", "time", "input", "output"]
    assert lines[3].split()[:2] == ["1", "completed"] and "Hi there" in lines[3]

    deleted = cli_here("tasks", "delete", "tsk_cli_table", "--json", base_url=emulator.base_url)
    assert deleted.returncode == 0, deleted.stderr
    assert json_lines(deleted.stdout) == [{"archived": True}]
    gone = cli_here("tasks", "show", "tsk_cli_nothing", base_url=emulator.base_url)
    assert gone.returncode == 2 and gone.stderr.startswith("error: ") and "404" in gone.stderr


def test_tasks_need_the_service_and_an_id() -> None:
    assert cli_here("tasks", "show").returncode == 2
    assert cli_here("tasks").returncode == 2
    offline = cli_here("tasks", "show", "tsk_1", key=None)
    assert offline.returncode == 2 and "HANDINGER_API_KEY" in offline.stderr


# -- workers ----------------------------------------------------------------------------


def test_workers_create_update_delete(emulator: Emulator, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    made = cli_here(
        "workers", "create", "--instructions", "Answer in Catalan", "--title", "Catalan",
        "--summary", "replies in Catalan", "--visibility", "private",
        "--output-schema", str(schema), "--json", base_url=emulator.base_url,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (template,) = json_lines(made.stdout)
    assert template["title"] == "Catalan" and template["visibility"] == "private"
    assert template["instructions"] == "Answer in Catalan"
    assert template["outputSchema"] == SCHEMA

    # The schema's structured output comes back with the task's Worker.
    ran = cli_here("run", "--worker", template["id"], "Hola", "--json", base_url=emulator.base_url)
    assert ran.returncode == 0, ran.stderr
    assert isinstance(json_lines(ran.stdout)[-1]["data"]["structured_output"], dict)

    changed = cli_here(
        "workers", "update", template["id"], "--title", "Analyst", "--clear-output-schema",
        base_url=emulator.base_url,
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == template["id"]
    assert "updated worker template" in changed.stderr and "'Analyst'" in changed.stderr
    assert "output schema" not in changed.stderr

    deleted = cli_here("workers", "delete", template["id"], "--json", base_url=emulator.base_url)
    assert deleted.returncode == 0, deleted.stderr
    assert json_lines(deleted.stdout) == [{"deleted": True}]


def test_workers_create_on_the_embedded_emulator() -> None:
    made = cli_here("workers", "create", "--prompt", "a terse analyst", key=None)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("wrk_")
    assert "embedded emulator" in made.stderr.splitlines()[0]


def test_workers_usage_errors_exit_2(emulator: Emulator, tmp_path: Path) -> None:
    url = emulator.base_url
    both = cli_here("workers", "create", "--instructions", "a", "--prompt", "b", base_url=url)
    assert both.returncode == 2 and "error: " in both.stderr
    assert cli_here("workers", "create", "--visibility", "secret", base_url=url).returncode == 2
    nothing = cli_here("workers", "update", "wrk_1", base_url=url)
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: nothing to change")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = cli_here("workers", "create", "--output-schema", str(bad), base_url=url)
    assert refused.returncode == 2 and "JSON object" in refused.stderr
    absent = cli_here("workers", "create", "--output-schema", str(tmp_path / "no"), base_url=url)
    assert absent.returncode == 2 and absent.stderr.startswith("error: --output-schema")


def test_a_refused_key_is_named_by_its_source_never_shown(emulator: Emulator) -> None:
    by_env = cli_here("workers", "create", "--instructions", "x", key="sk-wrong-env",
                      base_url=emulator.base_url)  # fmt: skip
    assert by_env.returncode == 3 and "HANDINGER_API_KEY" in by_env.stderr
    assert "401" in by_env.stderr and "sk-wrong-env" not in by_env.stderr
    by_flag = cli_here("schedules", "list", "wrk_1", "--api-key", "sk-wrong-flag",
                       base_url=emulator.base_url)  # fmt: skip
    assert by_flag.returncode == 3 and "--api-key" in by_flag.stderr
    assert by_flag.stderr.startswith("error: ") and "sk-wrong-flag" not in by_flag.stderr
    nothing = cli_here("webhooks", "show", "wrk_1", key=None, base_url=emulator.base_url)
    assert nothing.returncode == 3 and "HANDINGER_API_KEY" in nothing.stderr


# -- schedules ----------------------------------------------------------------------------


def test_schedules_create_list_cancel(emulator: Emulator) -> None:
    worker_id = _template(emulator)
    url = emulator.base_url
    cron = cli_here("schedules", "create", worker_id, "Weekly report", "--cron", "0 9 * * 1",
                    "--budget", "low", "--json", base_url=url)  # fmt: skip
    assert cron.returncode == 0, cron.stderr
    (made,) = json_lines(cron.stdout)
    assert made["type"] == "cron" and made["cron"] == "0 9 * * 1" and made["budget"] == "low"
    every = cli_here("schedules", "create", worker_id, "Ping", "--every", "3600", base_url=url)
    assert every.returncode == 0, every.stderr
    assert "every 3600s" in every.stderr
    at = cli_here("schedules", "create", worker_id, "Later", "--at", "2099-01-01T09:00:00Z",
                  base_url=url)  # fmt: skip
    assert at.returncode == 0, at.stderr

    listed = cli_here("schedules", "list", worker_id, base_url=url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("3 schedules on " + worker_id)
    assert "cron 0 9 * * 1" in listed.stdout and every.stdout.strip() in listed.stdout

    cancelled = cli_here("schedules", "cancel", worker_id, made["id"], "--json", base_url=url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json_lines(cancelled.stdout) == [{"cancelled": True}]
    after = cli_here("schedules", "list", worker_id, "--json", base_url=url)
    ids = {s["id"] for s in json_lines(after.stdout)[0]["schedules"]}
    assert made["id"] not in ids and every.stdout.strip() in ids


def test_schedules_usage_errors_exit_2(emulator: Emulator) -> None:
    url = emulator.base_url
    for when in ([], ["--in", "0"], ["--every", "x"], ["--cron", "* * * * *", "--in", "5"],
                 ["--at", "tomorrow"], ["--at", "2099-01-01T09:00:00"]):  # fmt: skip
        done = cli_here("schedules", "create", "wrk_1", "Hi", *when, base_url=url)
        assert done.returncode == 2, (when, done.stderr)
        assert "error: " in done.stderr
    bad_cron = cli_here("schedules", "create", _template(emulator), "Hi", "--cron", "every day",
                        base_url=url)  # fmt: skip
    assert bad_cron.returncode == 2 and bad_cron.stderr.startswith("error: ")
    assert "cron" in bad_cron.stderr


# -- webhooks ----------------------------------------------------------------------------


def test_webhooks_set_show_clear_and_executions(emulator: Emulator) -> None:
    worker_id = _template(emulator)
    url = emulator.base_url
    put = cli_here("webhooks", "set", worker_id, "https://example.com/hook", "--json",
                   base_url=url)  # fmt: skip
    assert put.returncode == 0, put.stderr
    (hook,) = json_lines(put.stdout)
    assert hook == {"url": "https://example.com/hook", "token": None, "hasToken": True}

    shown = cli_here("webhooks", "show", worker_id, base_url=url)
    assert shown.returncode == 0 and "url: https://example.com/hook" in shown.stdout
    assert "--show-token" in shown.stdout
    revealed = cli_here("webhooks", "show", worker_id, "--show-token", "--json", base_url=url)
    token = json_lines(revealed.stdout)[0]["token"]
    assert isinstance(token, str) and token and token not in shown.stdout + put.stdout

    page = cli_here("webhooks", "executions", worker_id, "--page", "1", "--json", base_url=url)
    assert page.returncode == 0, page.stderr
    assert json_lines(page.stdout)[0]["page"] == 1
    table = cli_here("webhooks", "executions", worker_id, base_url=url)
    assert table.stdout.strip() == "no delivery attempts yet"

    cleared = cli_here("webhooks", "set", worker_id, "--clear", base_url=url)
    assert cleared.returncode == 0 and "no webhook" in cleared.stdout


def test_webhooks_usage_errors_exit_2(emulator: Emulator) -> None:
    url = emulator.base_url
    neither = cli_here("webhooks", "set", "wrk_1", base_url=url)
    assert neither.returncode == 2 and neither.stderr.startswith("error: ")
    both = cli_here("webhooks", "set", "wrk_1", "https://x.example", "--clear", base_url=url)
    assert both.returncode == 2
    assert cli_here("webhooks", "executions", "wrk_1", "--page", "0", base_url=url).returncode == 2
    assert cli_here("webhooks", "listen").returncode == 2  # no --port
    no_token = cli_here("webhooks", "listen", "--port", "0")
    assert no_token.returncode == 2 and "HANDINGER_WEBHOOK_TOKEN" in no_token.stderr


def _lines(stream: IO[str], readers: list[threading.Thread]) -> queue.Queue[str]:
    """The lines a process writes, read by a thread (added to ``readers``): waited for
    with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        with stream:
            for line in stream:
                lines.put(line)

    readers.append(threading.Thread(target=read, daemon=True))
    readers[-1].start()
    return lines


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_webhooks_listen_prints_a_delivery_from_the_emulator(
    emulator: Emulator, tmp_path: Path, as_json: bool
) -> None:
    url = emulator.base_url
    worker_id = _template(emulator)
    # A token is made with the first URL, and kept when the URL changes to the listener's.
    cli_here("webhooks", "set", worker_id, "http://127.0.0.1:9/", base_url=url)
    shown = cli_here("webhooks", "show", worker_id, "--show-token", "--json", base_url=url)
    token = json_lines(shown.stdout)[0]["token"]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")

    env = environment()
    listener = subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "webhooks", "listen", "--port", "0",
         "--path", "/hook", "--token-file", str(token_file), *(["--json"] if as_json else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    readers: list[threading.Thread] = []
    try:
        assert listener.stdout is not None and listener.stderr is not None
        said, printed = _lines(listener.stderr, readers), _lines(listener.stdout, readers)
        ready = said.get(timeout=30)
        assert "listening for webhook deliveries at http://127.0.0.1:" in ready, ready
        hook_url = ready.split(" at ")[1].split()[0]
        assert hook_url.endswith("/hook")
        # A request without the token is refused, and the person is told on stderr.
        forged = urllib.request.Request(
            hook_url, data=b"{}", headers={"X-Handinger-Token": "whsec-forged"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=30)
        refused.value.close()
        assert refused.value.code == 401
        assert said.get(timeout=30).startswith("warning: ")
        assert cli_here("webhooks", "set", worker_id, hook_url, base_url=url).returncode == 0

        task_id = _task(emulator, worker_id, "Announce me")
        line = printed.get(timeout=30)
        if as_json:
            delivery = json.loads(line)
            assert delivery["type"] == "delivery" and delivery["status"] == "completed"
            assert delivery["worker_id"] == worker_id and delivery["task_id"]
            assert delivery["body"]["worker"]["id"] == task_id
        else:
            assert "task " in line and worker_id in line and "completed" in line
        assert token not in line

        listener.send_signal(signal.SIGINT)
        assert listener.wait(timeout=30) == 130
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        for reader in readers:
            reader.join(timeout=10)  # the process is gone: each reads to the end, then closes
    attempts = cli_here("webhooks", "executions", worker_id, "--json", base_url=url)
    logs = json_lines(attempts.stdout)[0]["logs"]
    assert any(log["requestStatus"] == "success" and log["url"] == hook_url for log in logs)


def test_webhooks_listen_on_a_port_in_use_exits_3(emulator: Emulator, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("whsec-test")
    port = emulator.base_url.rsplit(":", 1)[1].rstrip("/")
    taken = cli_here("webhooks", "listen", "--port", port, "--token-file", str(token_file))
    assert taken.returncode == 3 and taken.stderr.startswith("error: cannot listen")
    assert "whsec-test" not in taken.stderr
    assert API_KEY not in taken.stderr


@pytest.mark.parametrize(
    "words",
    [
        ["tasks", "show"], ["tasks", "delete"], ["workers", "create"], ["workers", "update"],
        ["workers", "delete"], ["schedules", "create"], ["schedules", "list"],
        ["schedules", "cancel"], ["webhooks", "set"], ["webhooks", "show"],
        ["webhooks", "executions"], ["webhooks", "listen"], ["run"],
    ],
    ids=" ".join,
)  # fmt: skip
def test_every_subcommand_says_what_it_does_and_its_exit_codes(words: list[str]) -> None:
    parser = _parser()
    for word in words:
        (choices,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = choices.choices[word]
    assert parser.description and "exit codes: 0" in (parser.epilog or "")
    for action in parser._actions:
        assert action.help, f"{' '.join(words)} {action.dest}: no help"
    shown = cli_here(*words, "--help")
    assert shown.returncode == 0 and "exit codes: 0" in shown.stdout


def test_done_or_not_says_the_outcome_and_exits_1_when_not_done(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from handinger_stream.cli.connection import done_or_not

    plain, as_json = argparse.Namespace(json=False), argparse.Namespace(json=True)
    kind = {"did": "archived", "do": "archive", "what": "task t1"}
    assert done_or_not(plain, {"archived": True}, True, **kind) == 0
    assert capsys.readouterr() == ("", "archived task t1\n")
    assert done_or_not(plain, {"archived": False}, False, **kind) == 1
    assert capsys.readouterr() == ("", "error: the service did not archive task t1\n")
    assert done_or_not(as_json, {"archived": False}, False, **kind) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"archived": False}
    assert err == "error: the service did not archive task t1\n"


def test_webhooks_show_prints_the_url_without_control_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from handinger_stream.cli.webhooks import _print_webhook
    from handinger_stream.types.webhook import Webhook

    args = argparse.Namespace(json=False, show_token=False, worker_id="wrk_1")
    _print_webhook(args, Webhook(url="https://example.com/\x1b[2Jhook", token="whsec_1"))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "whsec_1" not in out
    assert out.splitlines()[0] == "url: https://example.com/[2Jhook"
