"""The emulator's bytes, pinned: for a given seed and input, exactly what it streamed before.

A refactoring of the emulator or its agent must not change one byte of a
turn (a cassette, a benchmark or a user's snapshot test may depend on it).
The digests below were taken from the code before the turn was cut into
named steps; only the clock (``created_at``) and the ephemeral port vary
between runs, and are blanked.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import aiohttp
import pytest

from handinger_stream.emulator import FAULT_HEADER, Emulator
from handinger_stream.testing.agent import plan_turn

_CLOCK = re.compile(rb'("(?:created_at|createdAt)": ?)\d+')

# (input, budget, fault header or None) per turn; the turns after the first continue the worker.
Turns = list[tuple[str, str, str | None]]

CASES: dict[str, tuple[dict[str, Any], list[Turns]]] = {
    "classic": (
        {"seed": 0},
        [
            [("What's the weather in Barcelona?", "low", None)],
            [("Compare three laptops", "standard", None), ("And tablets?", "low", None)],
            [("Write a report file on solar power", "standard", None)],
            [("Explain tides", "high", None), ("More detail", "unlimited", None)],
        ],
    ),
    "seeded": (
        {"seed": 7},
        [[("Hi", "standard", None), ("Again", "high", None), ("Once more", "low", None)]],
    ),
    "faults": (
        {"seed": 3},
        [
            [("Cut me short", "standard", "error-after=0")],
            [("Cut me later", "high", "error-after=9")],
            [("Cut in the answer", "low", "error-after=30"), ("Then whole", "low", None)],
        ],
    ),
    "fleet": (
        {"seed": 0, "fleet": True},
        [[(f"Fleet question {i}", "standard", None)] for i in range(24)],
    ),
    "fleet-with-fault": (
        {"seed": 5, "fleet": True},
        [[(f"Q{i}", "low", "error-after=20")] for i in range(6)],
    ),
}

DIGESTS = {
    "classic": "b729a26f442054b10772103812b3faee87c3978e7847ee814ce6d0d39aa24000",
    "seeded": "6793b061bedc3460f1cc178e32b9e1b7860d2391e16082951293434347721156",
    "faults": "4d53a401777e4185e4bb084dd6ceadb4be0fdb2a74dae27722e4826a7acaba20",
    "fleet": "dedf452777f119dcfb4eef633c0c3511dd86b116a667eb95ad750ae8c23bde6a",
    "fleet-with-fault": "26dcc296ea9666c7a428e9817bff43b5963617aa08e4d0536c1fccb55dec5c6d",
}


async def _transcript(options: dict[str, Any], workers: list[Turns]) -> bytes:
    out: list[bytes] = []
    async with Emulator(tokens_per_second=0, **options) as emu, aiohttp.ClientSession() as s:
        for turns in workers:
            url = emu.base_url + "/api/workers"
            for text, budget, fault in turns:
                headers = {"authorization": "Bearer any"}
                if fault is not None:
                    headers[FAULT_HEADER] = fault
                body = {"input": text, "budget": budget, "stream": True}
                async with s.post(url, json=body, headers=headers) as resp:
                    assert resp.status == 200
                    url = emu.base_url + "/api/workers/" + resp.headers["x-handinger-worker-id"]
                    data = await resp.read()
                out.append(data.replace(emu.base_url.encode(), b"BASE"))
            async with s.get(url, headers={"authorization": "Bearer any"}) as resp:
                out.append((await resp.read()).replace(emu.base_url.encode(), b"BASE"))
    return _CLOCK.sub(rb"\g<1>0", b"\n--\n".join(out))


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_emulator_streams_the_same_bytes_as_before(case: str) -> None:
    options, workers = CASES[case]
    transcript = await _transcript(options, workers)
    assert hashlib.sha256(transcript).hexdigest() == DIGESTS[case]


def test_the_agent_plans_the_same_turns_as_before() -> None:
    plans = [
        repr(plan_turn(text, budget, seed=seed, turn=turn, attach_file=attach, fleet=fleet))
        for text in ("Hi", "What's the weather in Barcelona?", "a csv report please", "  ?! ")
        for budget in ("low", "standard", "high", "unlimited")
        for seed in (0, 1)
        for turn in (0, 2)
        for attach in (None, True, False)
        for fleet in (None, "wrk_a", "wrk_b", "wrk_c")
    ]
    digest = hashlib.sha256("\n".join(plans).encode()).hexdigest()
    assert digest == "07b33e4dca84b32994b49beaa25e72febd6b7ed5dd8513ebb19ed799a6a85415"
