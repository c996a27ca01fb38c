"""The search's Pareto plot (pareto.png): the objective against a cost, the front and
the finish's runs drawn."""

from __future__ import annotations

from kcnn._files import atomic_path
from kcnn.tune.report import COST_AXES, best_record, cost_of, pareto_front

__all__ = ["plot_pareto"]


def plot_pareto(path, records, objective, *, maximize=True, title="", finish=(), cost_axis="macs"):
    """Writes a PNG of the objective (its own value, not the cost-weighted score)
    against the cost on `cost_axis` (log scale: "macs", MACs per image; "params"; or
    "latency", the measured median latency, `kcnn.tune.latency`) for the completed
    trials, with the Pareto front drawn and the best trial (by score) marked; with
    the finish's runs (`kcnn.tune.selection.FinishRecord`), their test accuracy
    (filled) and validation accuracy (open) joined by a line, the chosen one and the
    references (squares) labelled. On the latency axis each run is drawn at its
    measured latency (`FinishRecord.latency_ms`), a retrained trial without one at
    its trial's.

    Returns:
        The labels drawn: the legend's entries, then the points' labels.
    """
    # The object-oriented Matplotlib API: no pyplot, so no global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cost = cost_of(cost_axis)
    scored = [r for r in records if r.status == "COMPLETED" and r.value is not None and cost(r)]
    failed = sum(r.status in ("FAILED", "INVALID") for r in records)
    pruned = sum(r.status == "PRUNED" for r in records)
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if scored:
        axes.scatter([cost(r) for r in scored], [r.value for r in scored], s=18, color="0.6", label="trial")
        front = pareto_front(scored, maximize=maximize, cost_axis=cost_axis)
        axes.plot(
            [cost(r) for r in front],
            [r.value for r in front],
            "o-",
            color="tab:red",
            drawstyle="steps-post",
            label="Pareto front",
        )
        best = best_record(scored, maximize=maximize)
        if not any(r.rank == 1 for r in finish):  # Else the finish's chosen run is the one marked.
            axes.scatter(
                [cost(best)],
                [best.value],
                marker="*",
                s=160,
                color="tab:orange",
                zorder=3,
                label=f"best (trial {best.trial_id})",
            )
        for r in front:
            axes.annotate(r.trial_id, (cost(r), r.value), textcoords="offset points", xytext=(4, 4), fontsize=7)
        _plot_finish(axes, _finish_at(finish, records, cost_axis))
        axes.set_xscale("log")
        axes.legend(loc="best", fontsize=8)
    axes.set_xlabel(COST_AXES[cost_axis][1])
    axes.set_ylabel(f"{objective}; test accuracy after the full recipe" if finish else objective)
    pruned_note = f", {pruned} pruned" if pruned else ""
    axes.set_title(f"{title}{': ' if title else ''}{len(scored)} completed{pruned_note}, {failed} failed", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    legend = axes.get_legend()
    return [text.get_text() for text in (legend.get_texts() if legend else [])] + [text.get_text() for text in axes.texts]


def _finish_at(finish, records, cost_axis):
    """The finish's runs that have a cost on `cost_axis` and a test accuracy, as
    (run, cost) pairs: a retrained trial's latency, where the finish did not measure
    it, is its trial's."""
    latencies = {r.trial_id: r.latency_ms for r in records}
    pairs = []
    for r in finish:
        value = getattr(r, COST_AXES[cost_axis][0])
        if value is None and cost_axis == "latency" and r.kind == "trial":
            value = latencies.get(r.name)
        if value and r.test is not None:
            pairs.append((r, value))
    return pairs


def _plot_finish(axes, finish):
    """The finish's runs, (run, cost) pairs: validation (open) to test (filled)
    accuracy, retrained trials in blue (the chosen one a larger mark), references as
    black squares, all labelled."""
    for kind, color, marker in (("trial", "tab:blue", "o"), ("reference", "black", "s")):
        runs = [(r, x) for r, x in finish if r.kind == kind]
        if not runs:
            continue
        label = "retrained, test (val open)" if kind == "trial" else "reference, test (val open)"
        for r, x in runs:
            if r.validation is not None:
                axes.plot([x, x], [r.validation, r.test], color=color, alpha=0.4, lw=1)
                axes.scatter([x], [r.validation], marker=marker, s=30, facecolors="none", edgecolors=color, zorder=3)
        axes.scatter(
            [x for _, x in runs],
            [r.test for r, _ in runs],
            marker=marker,
            s=[70 if r.rank == 1 else 36 for r, _ in runs],
            color=color,
            zorder=4,
            label=label,
        )
        for index, (r, x) in enumerate(runs):
            text = f"{r.label}{' (chosen)' if r.rank == 1 else ''} {100 * r.test:.2f}%"
            # Alternately below and above the point: neighbours' labels overlap less.
            offset = (5, -11) if index % 2 == 0 else (5, 6)
            weight = "bold" if r.rank == 1 else "normal"
            axes.annotate(
                text, (x, r.test), textcoords="offset points", xytext=offset, fontsize=7, color=color, weight=weight
            )
