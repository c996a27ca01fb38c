"""The epochs a search's trials trained, by status: what pruning saves (issue 30).

    kcnn tune convnet --data digits --prune none   --directory /tmp/none
    kcnn tune convnet --data digits --prune median --directory /tmp/median
    python benchmarks/trial_epochs.py /tmp/none /tmp/median

Each trial counts the epochs it trained itself: the objective at each epoch that its
`kcnn_trial.json` keeps (a Hyperband trial that continues another from epoch 2 to 5
trained 3). The references trained as trials (the bar) are not trials and not counted.
"""

from __future__ import annotations

import argparse
import collections
import pathlib

from kcnn._files import read_json
from kcnn.tune._keras_tuner.stopping import PRUNED, STOPPED
from kcnn.tune.report import RECORD_FILE


def trial_epochs(project: pathlib.Path) -> dict[str, list[int]]:
    """{status: [epochs trained, per trial]} of the trials in a search's project, the
    statuses as trials.csv names them."""
    epochs = collections.defaultdict(list)
    for folder in sorted(project.glob("trial_*")):
        status = read_json(folder / "trial.json")["status"]
        history = (read_json(folder / RECORD_FILE) or {}).get("objective_history") or {}
        epochs[PRUNED if status == STOPPED else status].append(len(history))
    return dict(epochs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="+", type=pathlib.Path, help="search projects (each search's --directory)")
    projects = parser.parse_args(argv).projects
    totals = {}
    for project in projects:
        epochs = trial_epochs(project)
        totals[project] = sum(map(sum, epochs.values()))
        statuses = ", ".join(f"{len(values)} {status.lower()} ({sum(values)} epochs)" for status, values in sorted(epochs.items()))
        print(f"{project}: {totals[project]} trained trial-epochs: {statuses}")
    first = totals[projects[0]]
    for project in projects[1:]:
        print(f"{project}: {totals[project] - first:+d} epochs ({(totals[project] - first) / first:+.0%}) against {projects[0]}")


if __name__ == "__main__":
    main()
