"""Reporting: the results' ratios as a Markdown table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def to_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of the results' ratios: one row per benchmark, baseline and
    quantity; the B column names the baseline (see `BASELINES`)."""
    rows = ["| benchmark | quantity | A (median) | B (median) | A/B: median [min-max] | pairs |", "|---|---|---|---|---|---|"]
    for result in results:
        what = _title(result)
        if result.get("status") != "ok":
            rows.append(f"| {what} | - | - | - | {result.get('status')}: {result.get('reason', '')} | - |")
            continue
        for key, summary in _flat_ratios(result["ratios"]):
            if "median" not in summary:
                rows.append(f"| {what} | {key} | | | {summary['value']:.2f} ({summary.get('note', '')}) | 1 |")
                continue
            (name_a, a), (name_b, b) = summary["medians"].items()
            rows.append(
                f"| {what} | {key} | {name_a} {_fmt(key, a)} | {name_b} {_fmt(key, b)} | **{summary['median']:.2f}** "
                f"[{summary['min']:.2f}-{summary['max']:.2f}] | {len(summary['pairs'])} |"
            )
        for side, reason in result.get("skipped", {}).items():
            rows.append(f"| {what} | vs {side} | - | - | skipped: {reason} | - |")
        if result.get("chip_fraction"):
            fractions = ", ".join(f"{side} {value:.1%}" for side, value in result["chip_fraction"].items())
            rows.append(f"| {what} | fraction of {result['gpu']} peak | {fractions} | | | |")
    return "\n".join(rows)


def _flat_ratios(ratios: Mapping[str, Any]):
    """(quantity, summary) pairs of `ratios`, whether keyed by quantity or by baseline
    and quantity (`measure.record_runs`)."""
    for key, value in ratios.items():
        if "median" in value or "value" in value:
            yield key, value
        else:
            yield from value.items()


def _title(result: Mapping[str, Any]) -> str:
    kind = result.get("benchmark")
    if kind in ("model", "gpu"):
        if "input_size" not in result:
            return f"{result.get('model', '')} ({kind})"
        precision = result.get("device", {}).get("precision", "")
        return f"{result['model']} {result['input_size']}px b{result['batch_size']}: kcnn fit ({precision})"
    if kind == "small_model":
        config = result.get("config", {})
        spe = config.get("steps_per_execution", 1)
        if "steps_per_execution_resolved" in config and spe != config["steps_per_execution_resolved"]:
            spe = f"{spe}: {config['steps_per_execution_resolved']}"
        return f"lenet5 digits: kcnn fit (b{config.get('batch_size')}, spe {spe}, augment {config.get('augment')}) vs student fit (b32)"
    if kind == "time_to_accuracy":
        return f"lenet5 digits: time to {result['target']:.1%} test accuracy"
    if kind == "pipeline":
        return f"kcnn.data JPEG folder ({result['augment']}) -> {result['consumer']} {result['input_size']}px b{result['batch_size']}"
    return str(kind)


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("bytes"):
        return f"{value / 2**20:.0f} MiB"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"
