"""`best/`: the model a search keeps, a `kcnn.train` run folder whose metadata holds the
search's facts and its verdict against the references (`kcnn.tune.verdict`).

With a finish, `best/` is a copy of the finish's rank-1 run: a retrained trial, or a
reference that no retrained trial beat (`kcnn.tune.finish`). Without one (`top_k=0`),
it is the best trial as it trained (`save_trial`: restored from its checkpoint, or
retrained with the trial's recipe), or the cheapest reference trained as a trial (the
bar, `kcnn.tune.references`) when that wins under the same score and rule
(`without_finish`).

best/metadata.json's "search" holds: the project, space, objective, target and
config; "chosen" (kind, name, validation and test accuracy, MACs, params, score of
the run best/ holds, and where the search measures latency `latency_ms` and
`latency_spread_ms`); the trial's facts (`trial_id`, `score`, `metric`,
`hyperparameters`, `restored`; None where best/ is a reference, whose search's best
trial is then under "best_trial"); "against_references" (`kcnn.tune.verdict.compare`)
and "below_references" (the references it is less accurate than, on any split); with
several seeds (`SearchConfig.seeds`), "over_seeds" (`seed_facts`: the chosen model's
accuracies over them, the verdict on each reference, the runs); with k-fold runs on the
digits (`SearchConfig.folds`), "over_folds" (`kcnn.tune.folds.fold_facts`).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from kcnn._files import load_keras_model, read_json, write_json
from kcnn.tune import runs, verdict
from kcnn.tune._keras_tuner import checkpoint_path, metric_value, public_values
from kcnn.tune.references import bar_run
from kcnn.tune.report import LATENCY_KEYS
from kcnn.tune.selection import FinishRecord, rank

__all__ = ["BEST_DIR", "copy_run", "save_trial", "search_facts", "seed_facts", "without_finish", "write_facts"]

logger = logging.getLogger("kcnn")

BEST_DIR = "best"
#: The facts of the chosen run in best/metadata.json's "chosen", and its latency's
#: (`kcnn.tune.report.LATENCY_KEYS`) where the search measures it.
CHOSEN_KEYS = ("kind", "name", "validation", "test", "macs", "params", "score")


def search_facts(
    space, config, project_dir, best, *, restored, chosen, comparisons, over_seeds=None, over_folds=None
) -> dict[str, Any]:
    """The "search" facts of best/metadata.json (see the module), `best` the search's
    best keras-tuner trial, `chosen` the `FinishRecord` of the run best/ holds,
    `over_seeds` the chosen model's accuracies over seeds (`seed_facts`; None: one seed),
    `over_folds` its k-fold scores (`kcnn.tune.folds.fold_facts`; None: none)."""
    trial = {
        "trial_id": best.trial_id,
        "score": float(best.score),
        "metric": metric_value(best, config.objective),
        "hyperparameters": public_values(best.hyperparameters),
        "restored": restored,
    }
    keys = (*CHOSEN_KEYS, *LATENCY_KEYS) if chosen.latency_ms is not None else CHOSEN_KEYS
    facts: dict[str, Any] = {
        "project": pathlib.Path(project_dir).name,
        "space": space.name,
        "objective": config.objective,
        "target_macs": config.target_macs,
        "config": config.to_dict(),
        "chosen": {key: getattr(chosen, key) for key in keys},
        "against_references": list(comparisons),
        "below_references": verdict.below(comparisons),
    }
    if over_seeds is not None:
        facts["over_seeds"] = over_seeds
    if over_folds is not None:
        facts["over_folds"] = over_folds
    if chosen.kind == "trial":
        return {**facts, **trial}
    return {**facts, **dict.fromkeys(trial), "restored": False, "best_trial": trial}


def seed_facts(over_seeds, seeds, comparisons, project_dir) -> dict[str, Any]:
    """best/metadata.json's "over_seeds": the chosen model's accuracies over seeds
    (`kcnn.tune.verdict.over_seeds`: values, mean, sample standard deviation per
    split), the run folders of every seed of it and of the references (relative to
    the project), and the verdict on each reference (its entry in
    "against_references" has the figures)."""
    project_dir = pathlib.Path(project_dir)
    return {
        **over_seeds,
        "verdicts": {c["reference"]: c["seeds"]["verdict"] for c in comparisons if "seeds" in c},
        "runs": {
            runs[0].label: [run.path.relative_to(project_dir).as_posix() for run in runs]
            for runs in seeds.values()
        },
    }


def copy_run(record: FinishRecord, best_dir, facts: Mapping[str, Any]) -> keras.Model:
    """Makes `best_dir` a copy of the run folder of `record` with the search's `facts`;
    returns its model."""
    best_dir = pathlib.Path(best_dir)
    shutil.rmtree(best_dir, ignore_errors=True)
    shutil.copytree(record.path, best_dir, ignore=shutil.ignore_patterns("kcnn.lock", "*.tmp*"))
    write_facts(best_dir, facts)
    return load_keras_model(best_dir / "model.keras")


def write_facts(best_dir, facts: Mapping[str, Any]) -> dict[str, Any]:
    """Adds the search's `facts` to best/metadata.json (its kind "search"); returns it."""
    path = pathlib.Path(best_dir) / "metadata.json"
    metadata = read_json(path)
    metadata["kind"] = "search"
    metadata["search"] = {**metadata.get("search", {}), **facts}
    write_json(path, metadata)
    return metadata


def save_trial(tuner, space, data, config, project_dir, best) -> tuple[keras.Model, dict[str, Any], bool]:
    """The best trial's model in best/, restored from its checkpoint (or retrained with
    its recipe: `config.retrain`, or a checkpoint that cannot be read), as a
    `kcnn.train` run folder.

    Returns:
        (model, metadata, restored).
    """
    from kcnn import train
    from kcnn.train.driver import save_run
    from kcnn.train.runs import RunFolder

    hp = best.hyperparameters
    builder_arguments = {**space.declare(hp.copy()), "input_shape": list(space.input_shape), "classes": space.classes}
    epochs = int(hp.values.get("tuner/epochs", config.max_epochs))
    trial_config = dataclasses.replace(
        space.trial_config(hp, epochs), early_stopping=config.early_stopping, monitor=config.objective
    )
    run = RunFolder(pathlib.Path(project_dir) / BEST_DIR)
    shutil.rmtree(run.path, ignore_errors=True)  # The results of this search replace earlier ones.
    model = None
    if not config.retrain:
        try:
            with warnings.catch_warnings():
                # The checkpoint holds the trial's optimizer too, which is not wanted.
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model = tuner.load_model(best)
        except (OSError, ValueError) as error:  # e.g. a chief without the worker's checkpoint
            checkpoint = checkpoint_path(tuner, best.trial_id)
            logger.warning("Cannot restore trial %s from %s (%s: %s); retraining it", best.trial_id, checkpoint, type(error).__name__, error)
    restored = model is not None
    if restored:
        metadata = save_run(model, data, trial_config, run.path, kind="search", builder_arguments=builder_arguments)
        metadata["metrics"].update(
            best_epoch=None if best.best_step is None else best.best_step + 1, monitor=config.objective
        )
        model = keras.Model(model.inputs, model.outputs[0], name=model.name)  # What save_run saved.
    else:
        result = train.fit(space.build(hp.copy()), data.restarted(), trial_config, output=run.path, verbose=0)
        model, metadata = result.model, result.metadata
        metadata["kind"] = "search"
        metadata["model"]["builder_arguments"] = builder_arguments
    metadata["model"]["builder"] = space.builder_name
    run.write_metadata(metadata)
    return model, metadata, restored


def without_finish(trial: FinishRecord, record, bar_reference: str | None, config, project_dir) -> list[FinishRecord]:
    """The candidates for best/ without a finish, ranked (`kcnn.tune.selection.rank`,
    by the search's cost): the best trial as it trained, with the MACs and latency of
    its search's `record` (a `kcnn.tune.report.TrialRecord`), and the cheapest
    reference trained as a trial (its run in `<project>/bar/`, at the target's MACs),
    when there is one (only with the MACs cost)."""
    costs = {key: getattr(record, key) for key in ("macs", "latency_ms", "latency_spread_ms")}
    trial = dataclasses.replace(trial, **costs)
    candidates: Sequence[FinishRecord] = [trial]
    if bar_reference is not None:
        run = bar_run(bar_reference, project_dir)
        metadata = runs.completed(run)
        if metadata is not None:
            reference = runs.record(bar_reference, "reference", run, metadata)
            candidates = [trial, dataclasses.replace(reference, macs=config.target_macs)]
    return rank(candidates, config.cost_target, cost=config.cost)
