"""Render a suite result (JSON) as ``docs/benchmarks.md`` and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LIMIT = "limit: split"
PEER_FOR_TARGET = "httpx-sse + msgspec"
SDK_PEERS = ("handinger SDK", "openai AsyncStream")
OURS = "handinger-stream (aiohttp)"


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


def targets(result: dict[str, Any]) -> list[str]:
    scenarios = result["scenarios"]
    lines = ["| target | measured | met |", "| --- | --- | :---: |"]
    replay = scenarios.get("replay 1,000,000", {}).get("consumers", {})
    if replay:
        ours = _rate(replay[OURS])
        lines.append(
            f"| replay, full decode + fold ≥ 1,000,000 events/s | {ours:,.0f} | {'yes' if ours >= 1e6 else 'no'} |"
        )
        peer = _rate(replay.get(PEER_FOR_TARGET, {})) or 1
        lines.append(
            f"| ≥ 4× httpx-sse + msgspec | {ours / peer:.2f}× | {'yes' if ours / peer >= 4 else 'no'} |"
        )
        for sdk in SDK_PEERS:
            rate = _rate(replay.get(sdk, {})) or 1
            lines.append(
                f"| ≥ 15× {sdk} | {ours / rate:.1f}× | {'yes' if ours / rate >= 15 else 'no'} |"
            )
        entry = replay[OURS]
        text_mib = entry["text_chars"] / 2**20
        extra = entry["peak_rss_mib"] - entry["baseline_rss_mib"]
        ok = extra <= 3 * text_mib
        lines.append(
            f"| memory of a 1M replay ≤ 3× its text + baseline | {extra:.1f} MiB over a "
            f"{entry['baseline_rss_mib']:.0f} MiB baseline for {text_mib:.1f} MiB of text ({extra / text_mib:.1f}×) | {'yes' if ok else 'no'} |"
        )
    live = scenarios.get("live 1/ms", {}).get("consumers", {}).get(OURS)
    if live and "lag_p99_ms" in live:
        lines.append(
            f"| live: CPU ≤ 100 µs/event | {live['cpu_us_per_event']:.1f} µs | {'yes' if live['cpu_us_per_event'] <= 100 else 'no'} |"
        )
        lines.append(
            f"| live: p99 added latency ≤ 1 ms | {live['lag_p99_ms']:.2f} ms | {'yes' if live['lag_p99_ms'] <= 1 else 'no'} |"
        )
    for key in ("concurrency 1000x50/s", "concurrency 500x200/s"):
        entry = scenarios.get(key, {}).get("consumers", {}).get(OURS)
        if not entry or "lag_p50_ms" not in entry:
            continue
        streams = scenarios[key]["streams"]
        expected = streams * int(scenarios[key]["spec"].split("n=")[1].split("&")[0])
        delivered = entry["text_chars"] > 0 and entry["events"] >= expected
        ok = delivered and entry["lag_p50_ms"] <= 50 and entry["peak_rss_mib"] <= 200
        lines.append(
            f"| {key}: all delivered, lag p50 ≤ 50 ms, RSS ≤ 200 MiB | {entry['events']:,} events in "
            f"{entry['wall_s']:.1f} s, p50 {entry['lag_p50_ms']:.1f} ms, {entry['peak_rss_mib']:.0f} MiB (server used "
            f"{scenarios[key]['server_cpu_share']:.0%} of a core) | {'yes' if ok else 'no'} |"
        )
    fold = result.get("fold")
    if fold:
        lines.append(
            f"| fold within 1.5× of list-append-and-join | {fold['ratio_to_append_join']:.1f}× "
            f"({fold['fold_us_per_event']:.2f} µs/event) | {'yes' if fold['ratio_to_append_join'] <= 1.5 else 'no'} |"
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
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
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
        ax.set_title(f"{key} events: events/s (log scale)")
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
            f"{fold['deltas']:,} deltas folded by the reducer alone: {fold['fold_us_per_event']:.3f} µs per event, "
            f"{fold['ratio_to_append_join']:.1f}× a plain list-append-and-join of the same strings; the last tenth "
            f"of the deltas took {fold['last_over_first']:.2f}× the first tenth (linear: nothing folded is copied again).",
        ]
    docs.mkdir(parents=True, exist_ok=True)
    chart(result, docs / "benchmarks.png")
    target = docs / "benchmarks.md"
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return target
