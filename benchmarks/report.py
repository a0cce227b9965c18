"""Render a suite result (JSON) as ``docs/benchmarks.md`` and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LIMIT = "limit: split"
PEER_FOR_TARGET = "httpx-sse + msgspec"
SDK_PEERS = ("handinger SDK", "openai AsyncStream")
OURS = "handinger-stream (aiohttp)"
HAND = "hand loop (aiohttp + msgspec)"


def _rate(entry: dict[str, Any]) -> float:
    return float(entry["events_per_s"]["median"]) if "events_per_s" in entry else 0.0


def _fmt_rate(entry: dict[str, Any]) -> str:
    if "failed" in entry:
        return "failed"
    r = entry["events_per_s"]
    return f"{r['median']:,.0f} ({r['min']:,.0f}–{r['max']:,.0f})"


def replay_table(scenario: dict[str, Any]) -> list[str]:
    consumers = scenario["consumers"]
    limit = _rate(consumers.get(LIMIT, {})) or 1.0
    ours = _rate(consumers.get(OURS, {})) or 1.0
    lines = [
        "| consumer | events/s median (min–max) | of limit: split | handinger-stream (aiohttp) is × faster | CPU µs/event | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in consumers.items():
        if "failed" in entry:
            lines.append(f"| {name} | failed: {entry['failed']} | | | | |")
            continue
        rate = _rate(entry) or 1.0
        lines.append(
            f"| {name} | {_fmt_rate(entry)} | {rate / limit:.1%} | {ours / rate:.2f} | "
            f"{entry['cpu_us_per_event']:.2f} | {entry['peak_rss_mib']:.0f} |"
        )
    return lines


def latency_table(scenario: dict[str, Any], lag_only: bool = False) -> list[str]:
    head = "| consumer | rounds | events | wall s | lag p50 ms | p90 ms | p99 ms | max ms | CPU µs/event | peak RSS MiB |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, entry in scenario["consumers"].items():
        if "failed" in entry:
            lines.append(f"| {name} | | failed: {entry['failed']} | | | | | | | |")
            continue
        if "lag_p50_ms" not in entry:
            if lag_only:
                continue
            lines.append(
                f"| {name} | {entry['rounds']} | {entry['events']:,} | {entry['wall_s']:.1f} | – | – | – | – | {entry['cpu_us_per_event']:.2f} | "
                f"{entry['peak_rss_mib']:.0f} |"
            )
            continue
        lines.append(
            f"| {name} | {entry['rounds']} | {entry['events']:,} | {entry['wall_s']:.1f} | {entry['lag_p50_ms']:.2f} | {entry['lag_p90_ms']:.2f} | "
            f"{entry['lag_p99_ms']:.2f} | {entry['lag_max_ms']:.1f} | {entry['cpu_us_per_event']:.2f} | "
            f"{entry['peak_rss_mib']:.0f} |"
        )
    return lines


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def targets(result: dict[str, Any]) -> list[str]:
    """The targets of issue 11, each with the ratio measured in this run."""
    scenarios = result["scenarios"]
    lines = ["| target | measured | met |", "| --- | --- | :---: |"]
    rates = {}
    for shape in ("emulator shape", "AI SDK shape"):
        replay = scenarios.get(f"replay 1,000,000 ({shape})", {}).get("consumers", {})
        if not replay or "failed" in replay.get(OURS, {"failed": 1}):
            continue
        ours = rates[shape] = _rate(replay[OURS])
        peer = _rate(replay.get(PEER_FOR_TARGET, {})) or 1
        lines.append(
            f"| {shape}, 1M replay: ≥ 4× httpx-sse + msgspec | {ours:,.0f} events/s, "
            f"{ours / peer:.2f}× | {_yes(ours / peer >= 4)} |"
        )
        for sdk in SDK_PEERS:
            rate = _rate(replay.get(sdk, {})) or 1
            lines.append(
                f"| {shape}, 1M replay: ≥ 15× {sdk} | {ours / rate:.1f}× | {_yes(ours / rate >= 15)} |"
            )
    if len(rates) == 2:
        ratio = rates["emulator shape"] / rates["AI SDK shape"]
        lines.append(
            f"| the id shape within 0.8× of the id-less one | {ratio:.2f}× | {_yes(ratio >= 0.8)} |"
        )
    entry = scenarios.get("replay 1,000,000 (emulator shape)", {}).get("consumers", {}).get(OURS)
    if entry and "failed" not in entry:
        text_mib = entry["text_chars"] / 2**20
        extra = entry["peak_rss_mib"] - entry["baseline_rss_mib"]
        lines.append(
            f"| memory of a 1M replay ≤ 3× its text + baseline | {extra:.1f} MiB over a "
            f"{entry['baseline_rss_mib']:.0f} MiB baseline for {text_mib:.1f} MiB of text "
            f"({extra / text_mib:.1f}×) | {_yes(extra <= 3 * text_mib)} |"
        )
    for shape in ("emulator shape", "AI SDK shape"):
        live = scenarios.get(f"live 1/ms ({shape})", {}).get("consumers", {})
        ours_live, limit_live = live.get(OURS, {}), live.get(LIMIT, {})
        if "lag_p99_ms" not in ours_live or "lag_p99_ms" not in limit_live:
            continue
        cpu = ours_live["cpu_us_per_event"] / limit_live["cpu_us_per_event"]
        p99 = ours_live["lag_p99_ms"] / limit_live["lag_p99_ms"]
        lines.append(
            f"| {shape}, live, one event per read: CPU per event ≤ 1.15× limit: split | "
            f"{ours_live['cpu_us_per_event']:.1f} µs against {limit_live['cpu_us_per_event']:.1f}: "
            f"{cpu:.2f}× | {_yes(cpu <= 1.15)} |"
        )
        lines.append(
            f"| {shape}, live, one event per read: p99 added latency ≤ 1.2× limit: split | "
            f"{ours_live['lag_p99_ms']:.2f} ms against {limit_live['lag_p99_ms']:.2f}: {p99:.2f}× | "
            f"{_yes(p99 <= 1.2)} |"
        )
    for key in ("concurrency 1000x50/s (emulator shape)", "concurrency 500x200/s (emulator shape)"):
        consumers = scenarios.get(key, {}).get("consumers", {})
        entry, hand = consumers.get(OURS), consumers.get(HAND)
        if not entry or "lag_p50_ms" not in entry or not hand or "failed" in hand:
            continue
        streams = scenarios[key]["streams"]
        expected = streams * int(scenarios[key]["spec"].split("n=")[1].split("&")[0])
        delivered = entry["events"] >= expected
        cpu = entry["cpu_us_per_event"] / hand["cpu_us_per_event"]
        rss_limit = 1.2 * hand["peak_rss_mib"] + 20
        ok = (
            delivered
            and entry["lag_p50_ms"] <= 50
            and entry["lag_p99_ms"] <= 250
            and cpu <= 1.1
            and entry["peak_rss_mib"] <= rss_limit
        )
        lines.append(
            f"| {key}: every event, lag p50 ≤ 50 ms, p99 ≤ 250 ms, CPU ≤ 1.1× the hand loop, "
            f"RSS ≤ 1.2× its + 20 MiB | {entry['events']:,} of {expected:,} events, p50 "
            f"{entry['lag_p50_ms']:.1f} ms, p99 {entry['lag_p99_ms']:.1f} ms, CPU {cpu:.2f}×, "
            f"{entry['peak_rss_mib']:.0f} MiB against {hand['peak_rss_mib']:.0f} (server "
            f"{scenarios[key]['server_cpu_share']:.0%} of a core) | {_yes(ok)} |"
        )
    fold = result.get("fold")
    if fold:
        lines.append(
            f"| fold within 1.5× of list-append-and-join | {fold['ratio_to_append_join']:.1f}× "
            f"({fold['fold_us_per_event']:.3f} µs/event) | {_yes(fold['ratio_to_append_join'] <= 1.5)} |"
        )
    return lines


def _pacing_note(spec_text: str) -> str:
    spec = dict(part.split("=") for part in spec_text.split("&"))
    if "pace_ms" not in spec:
        return ""
    ideal = int(spec["n"]) * float(spec["pace_ms"]) / 1000
    return (
        f" Paced, the ideal wall time is {ideal:g} s. The server stamps an event when it writes"
        " it, so a consumer that cannot keep up shows as a longer wall time (the server waits"
        " for it to read) more than as lag."
    )


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in result["scenarios"] if k.startswith("replay")]
    columns = 2
    rows = (len(keys) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys, strict=False):
        consumers = result["scenarios"][key]["consumers"]
        names = [
            n for n in consumers if "failed" not in consumers[n] and not n.startswith("limit: read")
        ]
        rates = [_rate(consumers[n]) for n in names]
        colours = [
            "#999999"
            if n.startswith("limit")
            else "#1f77b4"
            if n.startswith("handinger-stream")
            else "#ff7f0e"
            for n in names
        ]
        bars = ax.barh(names, rates, color=colours)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"{key}: events/s (log scale)", fontsize=10)
        for bar, rate in zip(bars, rates, strict=True):
            ax.text(
                rate,
                bar.get_y() + bar.get_height() / 2,
                f" {rate / 1e3:,.0f}k",
                va="center",
                fontsize=8,
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def watch_section(watch: dict[str, Any]) -> list[str]:
    """``python -m benchmarks watch --save``: many workers through ``workers.watch``."""
    out = [
        "",
        f"## Watching {watch['workers']:,} workers (`python -m benchmarks watch`)",
        "",
        f"Stream: `{watch['spec']}` for each of {watch['workers']:,} workers, "
        f"{watch['rounds']} rounds. The server used {watch['server_cpu_share']:.0%} of a core. "
        "`streams`: one task and one `async for` per `WorkerStream`; `watch`: the same "
        "streams merged by `client.workers.watch`.",
        "",
        "| consumer | every event once | events | lag p50 ms | lag p99 ms | CPU µs/event | peak RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in watch["consumers"].items():
        if "failed" in entry:
            out.append(f"| {name} | failed: {entry['failed']} | | | | | |")
            continue
        out.append(
            f"| {name} | {_yes(entry['every_event_once'])} | {entry['events']:,} | "
            f"{entry['lag_p50_ms']:.1f} | {entry['lag_p99_ms']:.1f} | "
            f"{entry['cpu_us_per_event']:.1f} | {entry['peak_rss_mib']:.0f} |"
        )
    if "cpu_ratio" in watch:
        out += ["", f"CPU per event, watch against one stream each: {watch['cpu_ratio']:.2f}×."]
    if watch.get("targets"):
        out += ["", "Targets (issue 12):", ""]
        out += [f"- {name}: {_yes(ok)}" for name, ok in watch["targets"].items()]
    return out


def relay_section(relay: dict[str, Any]) -> list[str]:
    """``python -m benchmarks relay --save``: one worker fanned out to many SSE readers."""
    out = [
        "",
        "## Relay fan-out (`python -m benchmarks relay`)",
        "",
        f"One upstream worker ({relay['events']:,} events, one per {relay['pace_ms']:g} ms) "
        "relayed by one relay process to concurrent SSE readers on loopback. Lag: upstream "
        "sending to reader receiving, for the events sent once every reader was connected.",
        "",
        "| store | readers | every reader got every event | lag p50 ms | lag p99 ms | relay CPU µs per delivered event | memory KiB per reader |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in relay["results"]:
        out.append(
            f"| {r['store']} | {r['readers']:,} | {_yes(r['every_reader_got_every_event'])} | "
            f"{_ms(r['lag_ms_p50'])} | {_ms(r['lag_ms_p99'])} | "
            f"{r['cpu_us_per_delivered_event']} | {r['memory_kib_per_reader']} |"
        )
    return out


OURS_FANOUT = ("relay-memory", "relay-redis")


def _split(by_process: dict[str, float | None], total: float | None) -> str:
    """``relay 5.1 + redis-server 3.2 = 8.3``: each server process's share, then their sum."""
    if total is None:
        return "–"

    def fmt(value: float) -> str:
        return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"

    if len(by_process) == 1:
        return fmt(total)
    parts = " + ".join(f"{role} {fmt(value or 0)}" for role, value in by_process.items())
    return f"{parts} = {fmt(total)}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _other(result: dict[str, Any]) -> str:
    share = result.get("other_cpu_share_of_a_core")
    return "–" if share is None else f"{share:.2f}"


def _tree_note(tree: dict[str, Any] | None) -> str:
    if not tree:
        return ""
    changed = tree["changed"]
    extra = f", with {', '.join(f'`{c}`' for c in changed)} changed beside it" if changed else ""
    return f" The relay's code: commit {tree['commit']}{extra}."


def fanout_section(fanout: dict[str, Any]) -> list[str]:
    """``python -m benchmarks fanout --save``: four systems fanning one turn out, per mode."""
    out = [
        "",
        "## Relay fan-out, four systems (`python -m benchmarks fanout`)",
        "",
        "One upstream turn (text deltas, each stamped when sent) fanned out to SSE readers on "
        "loopback by four systems, each in processes of its own, one after the other in one run "
        "on one upstream server, with the load generator (raw asyncio sockets) in a process "
        "of its own: the relay on its MemoryStore (`relay-memory`) and on a RedisStore "
        "(`relay-redis`); Vercel's resumable-stream 2.2.13 in a small Node server on the npm "
        "`redis` client (`resumable`, `benchmarks/peers/resumable/`); a minimal aiohttp "
        "fan-out with one upstream read, a queue per reader and nothing stored (`minimal`, "
        "`benchmarks/peers/fanout_minimal.py`). Both Redis systems get a fresh redis-server "
        "of the same binary.",
        "",
        "Readers are judged by content: the text of the deltas each received, in order, "
        "against the turn's (the relay merges a backlog's or a joiner's history's deltas "
        "into fewer events; *merged*: the share of deltas that came merged). *Whole turn*: "
        "readers that got every delta of the turn once, in order, and its end. *From "
        "join*: readers that got every delta from the point they joined on, once, in order "
        "(the relay and resumable-stream replay a joiner the turn from its start; the "
        "minimal fan-out has no history, so a joiner gets only what follows: its whole-turn "
        "count is low by design). *Missed*: readers lacking deltas sent (by the upstream's "
        "schedule) after their connection was open (the largest loss in brackets). Lag: "
        "receipt less stamp (a merged event is timed by its newest delta), over "
        "the deltas sent once every reader was connected (join before) or once that reader "
        "was (join during); then over the first and last tenth of the turn's deltas. CPU: "
        "each server process's time (`/proc/PID/stat`) per delta delivered to a reader. "
        "Join: from opening the first reader until every reader had its first byte, and "
        "each reader's own wait for it (p99; with join during, the join time includes the "
        "spread of the joins over half the turn). Memory: the servers' peak resident set with "
        "the readers connected, less before, per reader. *Other load*: the cores' busy time "
        "during the system's run that none of the benchmark's processes account for, in "
        "cores (the machine is shared).",
        "",
        "![fan-out lag and CPU](fanout.png)",
    ]
    for key, run in fanout.items():
        joined = (
            "the readers joined as the turn began (as fast as they could be opened)"
            if run["join"] == "before"
            else "the readers joined spread over the first half of the turn"
        )
        out += [
            "",
            f"### {key}",
            "",
            f"{run['readers']:,} readers, {run['events']:,} deltas one per {run['pace_ms']:g} "
            f"ms; {joined}. The upstream server used {run['upstream_cpu_s']:.1f} s of CPU "
            f"over the four runs.{_tree_note(run.get('tree'))}",
            "",
            "| system | whole turn | from join | missed | merged | lag p50 ms | lag p99 ms | "
            "p50 / p99 first tenth ms | p50 / p99 last tenth ms | CPU µs per delivered delta | "
            "join s | join wait p99 ms | memory KiB per reader | other load |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |",
        ]
        for r in run["results"]:
            readers = r["readers"]
            missed = r["readers_missing_events_sent_after_connecting"]
            join_s = "–" if r["join_s"] is None else f"{r['join_s']:.2f}"
            memory: dict[str, float | None] = dict(r["memory_kib_per_reader"])
            out.append(
                f"| {r['system']} | {r['readers_whole_turn']:,} of {readers:,} | "
                f"{r['readers_gapless_from_join']:,} | "
                f"{missed:,}"
                + (f" ({r['events_missed_after_connecting_max']})" if missed else "")
                + f" | {_share(r.get('merged_deltas_share'))} | {_ms(r['lag_ms_p50'])} | {_ms(r['lag_ms_p99'])} | "
                f"{_ms(r['lag_ms_first_tenth_p50'])} / {_ms(r['lag_ms_first_tenth_p99'])} | "
                f"{_ms(r['lag_ms_last_tenth_p50'])} / {_ms(r['lag_ms_last_tenth_p99'])} | "
                f"{_split(r['cpu_us_per_delivered_delta'], r['cpu_us_per_delivered_delta_total'])}"
                f" | {join_s} | {_ms(r['join_wait_ms_p99'])} | "
                f"{_split(memory, r['memory_kib_per_reader_total'])} | "
                f"{_other(r)} |"
            )
    return out


def fanout_chart(fanout: dict[str, Any], path: Path) -> None:
    """Per mode, lag p50/p99 and CPU per delivered delta (stacked by process) per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    runs = list(fanout.items())
    fig, axes = plt.subplots(len(runs), 2, figsize=(14, 3.2 * len(runs)), squeeze=False)
    for (key, run), (lag_ax, cpu_ax) in zip(runs, axes, strict=True):
        results = run["results"]
        names = [r["system"] for r in results]
        colours = ["#1f77b4" if n in OURS_FANOUT else "#ff7f0e" for n in names]
        rows = range(len(names))
        for q, height, shade in (("p99", 0.8, 0.45), ("p50", 0.4, 1.0)):
            values = [r[f"lag_ms_{q}"] or 0 for r in results]
            bars = lag_ax.barh(rows, values, height=height, color=colours, alpha=shade)
            if q == "p99":
                for bar, value in zip(bars, values, strict=True):
                    lag_ax.text(
                        value,
                        bar.get_y() + bar.get_height() / 2,
                        f" p99 {value:,.1f}" if value < 10 else f" p99 {value:,.0f}",
                        va="center",
                        fontsize=8,
                    )
        lag_ax.set_yticks(list(rows), names)
        lag_ax.set_xscale("log")
        lag_ax.xaxis.set_minor_formatter(NullFormatter())  # the minor labels overlap
        lag_ax.set_xlim(right=max(r["lag_ms_p99"] or 1 for r in results) * 4)  # room for labels
        lag_ax.invert_yaxis()
        lag_ax.set_title(f"{key}: lag ms, p50 (dark) and p99 (log scale)", fontsize=10)
        left = [0.0] * len(names)
        roles = {role for r in results for role in r["cpu_us_per_delivered_delta"]}
        for role in sorted(roles, key=lambda role: role == "redis-server"):
            values = [r["cpu_us_per_delivered_delta"].get(role) or 0.0 for r in results]
            redis = role == "redis-server"
            cpu_ax.barh(
                rows,
                values,
                left=left,
                color="#999999" if redis else colours,
                label="redis-server" if redis else None,
            )
            left = [a + b for a, b in zip(left, values, strict=True)]
        for row, total in zip(rows, left, strict=True):
            cpu_ax.text(total, row, f" {total:,.1f}", va="center", fontsize=8)
        cpu_ax.set_xlim(0, max(left) * 1.15 or 1)  # room for the totals
        cpu_ax.set_yticks(list(rows), names)
        cpu_ax.invert_yaxis()
        cpu_ax.set_title(f"{key}: server CPU µs per delivered delta", fontsize=10)
        if "redis-server" in roles:
            cpu_ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BY_HAND = "<!-- measured by hand below this line: a re-render keeps it -->\n"


def render(result: dict[str, Any], docs: Path) -> Path:
    m = result["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks all` (see `benchmarks/README.md`); the raw",
        "numbers are in `benchmarks/results.json`. Each consumer ran in its own",
        f"process, rounds interleaved: {result['rounds']} rounds, {result['concurrency_rounds']} for",
        "the concurrency scenario (the tables there say how many each consumer had:",
        "a consumer added later with `python -m benchmarks concurrency --consumers ...`",
        "may have fewer). Median, then min–max.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared), Python {m['python']}, {m['platform']}, {m['date']}.",
        f"Packages: {packages}.",
        "",
        "![events per second](benchmarks.png)",
        "",
        "## Targets",
        "",
        *targets(result),
    ]
    for key, scenario in result["scenarios"].items():
        out += [
            "",
            f"## {key}",
            "",
            f"Stream: `{scenario['spec']}`"
            + (f", {scenario['streams']} at once" if scenario["streams"] > 1 else "")
            + f". The server used {scenario['server_cpu_share']:.0%} of a core."
            + _pacing_note(scenario["spec"]),
            "",
        ]
        if key.startswith("replay"):
            out += replay_table(scenario)
        else:
            out += latency_table(scenario)
    fold = result.get("fold")
    if fold:
        out += [
            "",
            "## Fold cost",
            "",
            f"{fold['deltas']:,} deltas folded by the reducer alone, a read's worth at a time as the stream "
            f"does (`WorkerState.apply_all`): {fold['fold_us_per_event']:.3f} µs per event, "
            f"{fold['ratio_to_append_join']:.1f}× a plain list-append-and-join of the same strings "
            f"(one at a time with `WorkerState.apply`: {fold.get('one_by_one_us_per_event', 0):.3f} µs per event); "
            f"the last tenth of the deltas took {fold['last_over_first']:.2f}× the first tenth "
            "(linear: nothing folded is copied again).",
        ]
    if "watch" in result:
        out += watch_section(result["watch"])
    if "relay" in result:
        out += relay_section(result["relay"])
    if "relay_ws" in result:
        from .relay_ws import section

        out += section(result["relay_ws"])
    if result.get("fanout"):
        out += fanout_section(result["fanout"])
    docs.mkdir(parents=True, exist_ok=True)
    chart(result, docs / "benchmarks.png")
    if result.get("fanout"):
        fanout_chart(result["fanout"], docs / "fanout.png")
    target = docs / "benchmarks.md"
    # Figures measured by hand (a script of their own, not the suite) sit after the
    # marker: a re-render keeps them.
    kept = ""
    if target.exists():
        _, marker, tail = target.read_text(encoding="utf-8").partition(BY_HAND)
        kept = marker + tail
    target.write_text("\n".join(out) + "\n" + ("\n" + kept if kept else ""), encoding="utf-8")
    return target
