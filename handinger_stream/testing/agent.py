"""The emulator's simulated agent: a deterministic plan for one turn.

Given the input, the budget, a seed and the turn number, it plans what a
research agent would stream: a little reasoning, a web search tool call,
sources, a multi-sentence answer cut into tokens, perhaps a file, and usage
and costs consistent with all of it. No I/O here; the emulator paces it.

>>> plan = plan_turn("What's the weather in Barcelona?", "low", seed=0, turn=0)
>>> plan.answer_tokens[:3] == plan.answer_tokens[:3] and len(plan.sources) > 0
True
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

__all__ = ["ToolCall", "TurnPlan", "plan_turn"]

SENTENCES = {"low": 3, "standard": 5, "high": 8, "unlimited": 12}
# USD per 1k tokens of the model tier a budget buys.
MODEL_RATE = {"low": 0.0004, "standard": 0.002, "high": 0.01, "unlimited": 0.03}
SANDBOX_RATE = {"low": 0.0005, "standard": 0.001, "high": 0.002, "unlimited": 0.004}

_OPENERS = (
    "Here is what I found about {topic}.",
    "I looked into {topic} across several recent sources.",
    "Short answer on {topic}: the picture is fairly consistent.",
)
_BODY = (
    "The most recent figures point the same way, with only small differences between sources.",
    "{source} gives the clearest summary, and the others broadly agree with it.",
    "Conditions can change quickly, so treat anything older than a day with some care.",
    "A second search turned up a detailed breakdown that matches the first.",
    "Local reports add useful context that the larger outlets leave out.",
    "The numbers have been stable over the past week, with one notable exception.",
    "Experts quoted in {source} expect the trend to continue in the short term.",
    "There is some disagreement on the details, but not on the overall direction.",
    "Historical data suggests this is within the usual range for the season.",
    "One source flags an outlier, which the others do not confirm.",
    "If you need more precision, the primary data is linked in the sources below.",
    "I cross-checked the dates so that nothing stale slipped through.",
)
_CLOSERS = (
    "In short: {topic} looks settled for now, and the sources below have the details.",
    "That is the state of things; ask a follow-up if you want me to dig deeper.",
)
_QUESTION = (
    r"^(please\s+)?(what|how|why|who|when|where|which|tell me about|explain)"
    r"('s|\s+is|\s+are|\s+was|\s+were|\s+do|\s+does|\s+did)?\s+"
)
_SITES = (
    ("en.wikipedia.org/wiki/{slug}", "{Topic} - Wikipedia"),
    ("www.reuters.com/search/news?q={q}", "Reuters: {Topic}"),
    ("www.bbc.co.uk/search?q={q}", "BBC: latest on {topic}"),
    ("news.ycombinator.com/search?q={q}", "Discussion: {topic}"),
    ("www.nature.com/search?q={q}", "Research on {topic}"),
)


@dataclass
class ToolCall:
    """A tool call beyond the first search: what it is given, how long it runs, what it gives."""

    call_id: str
    name: str
    input: dict[str, Any]
    output: dict[str, Any]
    # How long the tool runs, in token times: 50 at 25 tokens per second is 2 s.
    duration: int


@dataclass
class TurnPlan:
    """Everything one turn will stream, fixed up front."""

    message_id: str
    reasoning_tokens: list[str]
    query: str
    sources: list[dict[str, Any]]
    answer_tokens: list[str]
    file: dict[str, Any] | None
    usage: dict[str, Any]
    costs: dict[str, float]
    tool_call_id: str = ""
    search_results: list[dict[str, Any]] = field(default_factory=list)
    # Fleet mode only (see plan_turn's ``fleet``): more tool calls, and a failure.
    tools: list[ToolCall] = field(default_factory=list)
    fail_after: int | None = None  # the agent fails after this many chunks of the turn
    failure: str = ""

    @property
    def answer(self) -> str:
        return "".join(self.answer_tokens)


def _tokens(text: str) -> list[str]:
    # Word-sized tokens that keep their trailing space: joining gives the text back.
    return re.findall(r"\S+\s*", text)


def plan_turn(
    input: str,
    budget: str,
    *,
    seed: int,
    turn: int,
    attach_file: bool | None = None,
    fleet: str | None = None,
) -> TurnPlan:
    """Plan one turn. The same arguments always give the same plan.

    ``fleet`` (a key that differs per worker, such as its id) makes the turn
    one of a realistic fleet: an answer of varied length, sometimes more tool
    calls that run for a while, and now and then a failure. Without it the
    plan is the classic one, unchanged.

    >>> plans = [plan_turn("Hi", "low", seed=0, turn=0, fleet=f"w{i}") for i in range(40)]
    >>> len({len(p.answer_tokens) for p in plans}) > 5, any(p.tools for p in plans)
    (True, True)
    >>> 0 < sum(p.fail_after is not None for p in plans) < 10
    True
    """
    digest = hashlib.sha256(f"{seed}\x00{turn}\x00{budget}\x00{input}".encode()).digest()
    rng = random.Random(digest)
    if fleet is not None:
        # Each fleet worker draws from a generator of its own (and says its own words);
        # without a fleet the draws are the classic plan's, unchanged.
        rng = random.Random(hashlib.sha256(digest + f"\x00{fleet}".encode()).digest())
    # The draws below happen in this order, always: a plan depends on it.
    topic = _topic(input)
    sources = _sources(rng, topic, budget, turn)
    count = SENTENCES[budget] if fleet is None else rng.choice(_FLEET_SENTENCES)
    answer = _answer(rng, count, topic, sources)
    reasoning_tokens = _tokens(
        f"The user asks: {topic}. I should search for recent information, "
        f"compare {len(sources)} sources and answer concisely."
    )
    if attach_file is None:
        attach_file = budget in ("high", "unlimited") or bool(
            re.search(r"\b(file|report|csv|document)\b", input, re.I)
        )
    tools = _fleet_tools(rng, digest, topic, sources) if fleet is not None else []
    plan = TurnPlan(
        message_id=f"msg_{hashlib.sha256(digest + b'msg').hexdigest()[:16]}",
        reasoning_tokens=reasoning_tokens,
        query=topic,
        sources=sources,
        answer_tokens=_tokens(answer),
        file=_report(topic, answer, sources) if attach_file else None,
        usage={},
        costs={},
        tool_call_id=f"call_{hashlib.sha256(digest + b'call').hexdigest()[:12]}",
        search_results=[{"title": s["title"], "url": s["url"]} for s in sources],
        tools=tools,
    )
    plan.usage, plan.costs = _usage_and_costs(plan, input, budget, turn, count)
    if fleet is not None and rng.random() < _FLEET_FAILURE_RATE:
        plan.fail_after, plan.failure = _failure(rng, plan)
    return plan


def _topic(input: str) -> str:
    """What the input asks about: "What's the weather in X?" reads better as "the weather in X".

    >>> _topic("What's the weather in Barcelona?")
    'the weather in Barcelona'
    """
    topic = re.sub(r"[\s?!.]+$", "", input.strip()) or "your question"
    return (re.sub(_QUESTION, "", topic, flags=re.I) or topic)[:80]


def _lowered(topic: str) -> str:
    # Lowercased to go mid-sentence, unless it starts with an acronym.
    return topic[0].lower() + topic[1:] if topic[:2] != topic[:2].upper() else topic


def _sources(rng: random.Random, topic: str, budget: str, turn: int) -> list[dict[str, Any]]:
    """The pages the search finds: more for a larger budget."""
    slug = quote_plus(topic.replace(" ", "_"))
    q = quote_plus(topic)
    count = {"low": 2, "standard": 3, "high": 4, "unlimited": 5}[budget]
    return [
        {
            "sourceId": f"src-{turn}-{i}",
            "url": "https://" + site.format(slug=slug, q=q),
            "title": title.format(topic=_lowered(topic), Topic=topic[:1].upper() + topic[1:]),
        }
        for i, (site, title) in enumerate(rng.sample(_SITES, count))
    ]


def _answer(rng: random.Random, count: int, topic: str, sources: list[dict[str, Any]]) -> str:
    """``count`` sentences: an opener, a body drawn without repeats while it can, a closer."""
    body = rng.sample(_BODY, min(count - 2, len(_BODY)))
    while len(body) < count - 2:
        body.append(rng.choice(_BODY))
    sentences = [rng.choice(_OPENERS), *body, rng.choice(_CLOSERS)]
    source = sources[0]["title"].split(":")[0].split(" - ")[-1]
    return " ".join(s.format(topic=_lowered(topic), source=source) for s in sentences)


def _report(topic: str, answer: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The Markdown file a turn may attach: the answer and its sources."""
    lines = [f"# Report: {topic}", "", answer, "", "## Sources", ""]
    lines += [f"- [{s['title']}]({s['url']})" for s in sources]
    return {
        "filename": "report.md",
        "mediaType": "text/markdown",
        "content": "\n".join(lines) + "\n",
    }


def _usage_and_costs(
    plan: TurnPlan, input: str, budget: str, turn: int, sentences: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Tokens and dollars consistent with what the turn streams."""
    n_sources, n_tools = len(plan.sources), len(plan.tools)
    input_tokens = 180 + len(_tokens(input)) * 2 + 40 * n_sources + 60 * n_tools
    output_tokens = len(plan.answer_tokens) + len(plan.reasoning_tokens)
    costs = {
        "internalCostUsd": round(0.0001 * sentences, 6),
        "modelCostUsd": round((input_tokens + output_tokens) / 1000 * MODEL_RATE[budget], 6),
        "sandboxCostUsd": round(SANDBOX_RATE[budget] * sentences, 6),
        "toolCostUsd": round(0.001 * (n_sources + n_tools), 6),
    }
    usage = {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "reasoningTokens": len(plan.reasoning_tokens),
        "cacheReadTokens": 120 if turn > 0 else 0,
        "cacheWriteTokens": input_tokens if turn == 0 else 0,
        "totalTokens": input_tokens + output_tokens,
        "steps": 2,
        "costUsd": round(sum(costs.values()), 6),
        "credits": round(sum(costs.values()) * 100, 4),
    }
    return usage, costs


# -- the fleet --------------------------------------------------------------

# Sentences per answer: mostly short, a few long (at 25 tokens/s, 2 s to about 20 s of writing).
_FLEET_SENTENCES = (2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 10, 12, 16, 20, 24)
_FLEET_FAILURE_RATE = 0.1
_FAILURES = (
    "the model provider is overloaded (529); gave up after 3 retries",
    "tool {tool} timed out after 30 s",
    "the sandbox ran out of memory while running the code",
)


def _failure(rng: random.Random, plan: TurnPlan) -> tuple[int, str]:
    """Where a failing fleet turn stops (between the first search and the end of the answer)
    and what it says."""
    chunks = (
        12
        + len(plan.reasoning_tokens)
        + len(plan.sources)
        + 5 * len(plan.tools)
        + len(plan.answer_tokens)
    )
    tool = plan.tools[0].name if plan.tools else "web_search"
    return rng.randrange(8, chunks), rng.choice(_FAILURES).format(tool=tool)


def _fleet_tools(
    rng: random.Random, digest: bytes, topic: str, sources: list[dict[str, Any]]
) -> list[ToolCall]:
    """None to three more tool calls, each running for a while (2 to 8 s at 25 tokens/s)."""
    count = rng.choices((0, 1, 2, 3), weights=(4, 3, 2, 1))[0]
    calls: list[ToolCall] = []
    for i in range(count):
        call_id = f"call_{hashlib.sha256(digest + b'tool%d' % i).hexdigest()[:12]}"
        kind = rng.choice(("fetch_page", "run_code", "read_file", "web_search"))
        if kind == "fetch_page":
            url = rng.choice(sources)["url"]
            args: dict[str, Any] = {"url": url}
            result: dict[str, Any] = {"status": 200, "chars": rng.randrange(2_000, 60_000)}
        elif kind == "run_code":
            args = {"language": "python", "code": f"summarise({topic[:40]!r})"}
            result = {"exit_code": 0, "stdout": f"{rng.randrange(3, 40)} rows summarised"}
        elif kind == "read_file":
            args = {"path": rng.choice(("data.csv", "notes.md", "report-draft.md"))}
            result = {"bytes": rng.randrange(1_000, 200_000)}
        else:
            args = {"query": f"{topic[:60]} latest figures"}
            result = {"results": rng.randrange(3, 12)}
        calls.append(ToolCall(call_id, kind, args, result, duration=rng.randrange(50, 200)))
    return calls
