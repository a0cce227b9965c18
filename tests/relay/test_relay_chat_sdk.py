"""The AI SDK's own ``Chat`` against a relay process on loopback, in front of the emulator.

Each SDK major is an npm project of its own under ``tests/relay/chat_sdk/`` (exact pins,
locked); both run ``chat_sdk/chat.mjs``: an ``AbstractChat`` subclass (the class
``@ai-sdk/react``'s ``Chat`` is, with React's state) over a plain state, so what these
tests see is what ``useChat`` folds. ai 6 speaks SSE (``DefaultChatTransport``); ai 7
speaks SSE with ``resumeStreamIsReplay`` true and false, and the WebSocket
(``WebSocketChatTransport``, whose resume is always a replay).

The relay's resume plays the running turn from its first event: a replay. A Chat built
anew (a reload, a second tab) folds it from scratch whatever the flag says, since the
turn's ``start`` names a message it has not seen; only a Chat that resumes its own
dropped answer depends on it, and against this relay it must be true (the default).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handinger_stream.emulator import Emulator
from tests.helpers.emulators import emulator_fixture
from tests.nodejs import node22, npm_project, require_node
from tests.relay_helpers import RelayProcess

CHAT_SDK = Path(__file__).parent / "chat_sdk"
PROMPT = "What's the weather in Barcelona?"

# A pace at which a turn takes a few seconds: long enough to leave and come back mid-answer.
chat_emulator = emulator_fixture(tokens_per_second=40, keepalive_interval=0.2)

# (SDK major, chat.mjs options): the Chat under test.
SSE_REPLAY = ("ai7", {"resumeStreamIsReplay": True})
SSE_NOT_REPLAY = ("ai7", {"resumeStreamIsReplay": False})
CHATS = [
    pytest.param(("ai6", {}), id="ai6-sse"),
    pytest.param(SSE_REPLAY, id="ai7-sse-replay"),
    pytest.param(SSE_NOT_REPLAY, id="ai7-sse-not-replay"),
    pytest.param(("ai7", {"transport": "ws"}), id="ai7-websocket"),
]
Chat = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def relay_url(chat_emulator: Emulator) -> Iterator[str]:
    """A relay process (``handinger-stream relay``, chats in memory) over the emulator."""
    relay = RelayProcess(base_url=chat_emulator.base_url, redis_url=None)
    try:
        yield relay.url
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def sdk() -> dict[str, tuple[str, Path]]:
    """Each major's Node binary and installed project, ``chat.mjs`` beside its node_modules."""
    require_node()
    found: dict[str, tuple[str, Path]] = {}
    # ai 7 declares Node >= 22; ai 6 runs on the machine's own Node (20 or newer).
    for major, node in (("ai6", "node"), ("ai7", node22())):
        project = npm_project(CHAT_SDK / major)
        shutil.copyfile(CHAT_SDK / "chat.mjs", project / "chat.mjs")
        found[major] = (node, project)
    return found


def run_chat(
    sdk: dict[str, tuple[str, Path]],
    chat: Chat,
    base: str,
    chat_id: str,
    scenario: str,
    **options: Any,
) -> dict[str, Any]:
    """One scenario of ``chat.mjs`` with that Chat; what it printed."""
    major, chat_options = chat
    node, project = sdk[major]
    argv = [node, "chat.mjs", base, chat_id, scenario]
    argv.append(json.dumps({"text": PROMPT, **chat_options, **options}))
    result = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"chat.mjs {scenario} failed:\n{result.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def stored_history(base: str, chat_id: str) -> list[Any]:
    """The relay's history of the chat (``GET api/chat/{id}``)."""
    with urllib.request.urlopen(f"{base}api/chat/{chat_id}", timeout=30) as response:
        body: dict[str, Any] = json.load(response)
    assert body["id"] == chat_id
    messages: list[Any] = body["messages"]
    return messages


def answer(messages: list[Any]) -> str:
    """The text of the last assistant message."""
    last = [m for m in messages if m["role"] == "assistant"][-1]
    return "".join(p["text"] for p in last["parts"] if p["type"] == "text")


def without_id(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "id"}


def read_whole(report: dict[str, Any]) -> None:
    """A Chat that read its answer to the end: no error, one answer, never shrinking."""
    assert report["status"] == "ready" and report["error"] is None, report
    assert report["errors"] == []
    assert report["statuses"][-1] == "ready" and "streaming" in report["statuses"]
    assert report["mostAssistants"] == 1  # never a second copy of the answer, even briefly
    assert report["shrank"] == 0


def finished_history(base: str, chat_id: str) -> list[Any]:
    history = stored_history(base, chat_id)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["parts"] == [{"type": "text", "text": PROMPT}]
    return history


# -- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize("chat", CHATS)
def test_a_turn_ends_with_the_relays_history(
    sdk: dict[str, tuple[str, Path]], relay_url: str, chat: Chat, request: pytest.FixtureRequest
) -> None:
    chat_id = f"turn-{request.node.callspec.id}"
    out = run_chat(sdk, chat, relay_url, chat_id, "turn")
    history = finished_history(relay_url, chat_id)
    read_whole(out["a"])
    mine = out["a"]["messages"]
    # The answer is the stored one, every part; the question too, but for its id (below).
    assert mine[1:] == history[1:]
    assert [without_id(m) for m in mine] == [without_id(m) for m in history]


@pytest.mark.parametrize("chat", [CHATS[0], CHATS[1]])
def test_the_senders_question_keeps_its_id_in_the_history(
    sdk: dict[str, tuple[str, Path]], relay_url: str, chat: Chat, request: pytest.FixtureRequest
) -> None:
    chat_id = f"question-id-{request.node.callspec.id}"
    out = run_chat(sdk, chat, relay_url, chat_id, "turn")
    assert out["a"]["messages"] == finished_history(relay_url, chat_id)


@pytest.mark.parametrize("chat", CHATS)
def test_a_reload_mid_answer_resumes_the_whole_answer_once(
    sdk: dict[str, tuple[str, Path]], relay_url: str, chat: Chat, request: pytest.FixtureRequest
) -> None:
    chat_id = f"reload-{request.node.callspec.id}"
    out = run_chat(sdk, chat, relay_url, chat_id, "reload")
    history = finished_history(relay_url, chat_id)
    # The page that went had part of the answer, and stopped reading without an error.
    assert out["a"]["status"] == "ready" and out["a"]["error"] is None
    before = out["before"]
    assert before and answer(history).startswith(before) and before != answer(history)
    # The history fetched on reload had the question, not the answer still being written.
    assert out["history"] == history[:1]
    # The new Chat resumed: the whole answer, once, and exactly the stored messages.
    read_whole(out["b"])
    assert out["b"]["messages"] == history


@pytest.mark.parametrize("chat", CHATS)
def test_a_second_tab_sees_the_same_final_message(
    sdk: dict[str, tuple[str, Path]], relay_url: str, chat: Chat, request: pytest.FixtureRequest
) -> None:
    chat_id = f"tabs-{request.node.callspec.id}"
    out = run_chat(sdk, chat, relay_url, chat_id, "tabs")
    history = finished_history(relay_url, chat_id)
    assert out["history"] == history[:1]
    read_whole(out["a"])
    read_whole(out["b"])
    assert out["b"]["messages"] == history
    assert out["a"]["messages"][-1] == out["b"]["messages"][-1] == history[-1]


@pytest.mark.parametrize("chat", [CHATS[0], CHATS[1], CHATS[3]])
def test_a_dropped_connection_resumed_by_the_same_chat_gives_the_answer_once(
    sdk: dict[str, tuple[str, Path]], relay_url: str, chat: Chat, request: pytest.FixtureRequest
) -> None:
    chat_id = f"drop-{request.node.callspec.id}"
    out = run_chat(sdk, chat, relay_url, chat_id, "drop", breakAfter=5)
    history = finished_history(relay_url, chat_id)
    dropped = out["dropped"]
    # The SDK calls it a disconnect (its message says "network"), so it keeps the answer's state.
    assert dropped["status"] == "error" and "network" in dropped["error"]
    assert out["before"] and answer(history).startswith(out["before"])
    # The resumed stream is a replay: the Chat starts the message over, and ends with it once.
    report = out["a"]
    assert report["status"] == "ready" and report["error"] is None
    dropped_then_resumed = ["submitted", "streaming", "error", "submitted", "streaming", "ready"]
    assert report["statuses"] == dropped_then_resumed
    assert report["mostAssistants"] == 1
    assert out["a"]["messages"][1:] == history[1:]


def test_a_chat_told_the_resume_is_no_replay_folds_the_answer_twice(
    sdk: dict[str, tuple[str, Path]], relay_url: str
) -> None:
    """Why the page and the docs keep ``resumeStreamIsReplay`` true: with false, the Chat
    keeps what it had and adds the relay's replay after it. The relay cannot send only
    the rest: the transport's reconnect names no position (no ``Last-Event-ID``)."""
    chat_id = "drop-ai7-sse-not-replay"
    out = run_chat(sdk, SSE_NOT_REPLAY, relay_url, chat_id, "drop", breakAfter=5)
    history = finished_history(relay_url, chat_id)
    report = out["a"]
    assert report["status"] == "ready" and report["error"] is None
    parts = report["messages"][-1]["parts"]
    stored = history[-1]["parts"]
    assert len(parts) > len(stored) and parts[-len(stored) :] == stored
    texts = [p["text"] for p in parts if p["type"] == "text"]
    assert texts == [out["before"], answer(history)]
