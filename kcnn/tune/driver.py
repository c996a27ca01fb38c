"""`search()`: a keras-tuner search over a kcnn space, resumable and distributable.

The project folder it writes (layout, settings, overwrite, roles): `kcnn.tune.project`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from kcnn._files import write_json
from kcnn._lock import FolderLock
from kcnn.tune import best as best_dir
from kcnn.tune import cost, finish, folds, latency, pareto_plot, project, references, report, runs, selection, verdict
from kcnn.tune._keras_tuner import collect_trials, make_tuner, public_values
from kcnn.tune.budget import TimeBudget
from kcnn.tune.config import SearchConfig
from kcnn.tune.report import TrialRecord
from kcnn.tune.result import SearchResult, maximizes
from kcnn.tune.spaces import SearchSpace, get_space

__all__ = ["SearchResult", "search"]

logger = logging.getLogger("kcnn")

TRIALS_FILE = "trials.csv"
PLOT_FILE = "pareto.png"
FINISH_FILE = "finish.csv"


def search(
    space: str | SearchSpace = "convnet",
    data: Any = "digits",
    config: SearchConfig | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    on_trial: Callable[[TrialRecord], None] | None = None,
    ranges: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    verbose: int = 0,
    **options,
) -> SearchResult:
    """Searches a space of kcnn models on a dataset with keras-tuner.

    Each trial builds its model with the space's builder, trains it as `kcnn.train`
    does (same compile, optimizer, schedule and device settings) and is scored by the
    best epoch's objective, weighed by its cost above `config.target_macs` (the penalty
    side of MnasNet's soft constraint, `kcnn.tune.cost`; by default the MACs of the cheapest reference
    net, so that what costs more than LeNet-5 must be that much more accurate). A
    random proposal that does not fit the input or the budget is drawn again before
    any trial is spent on it; one proposed anyway (a grid point, Bayesian
    optimization's model) is a failed trial with its reason, and the search goes on.
    The Keras session is cleared between trials. Calling `search` again with the same
    project resumes it: finished trials are kept, an interrupted one runs again, to
    the score it would have had.

    With `config.time_budget`, no trial starts that a typical one would take past
    the budget, and the trial running when it is spent stops at its epoch's end; the
    finish is not counted in (`SearchResult.finish_seconds`; `kcnn.tune.budget`).
    With `config.prune="median"`, trials worse than the median of the completed ones
    at the same epoch stop there, PRUNED (`kcnn.tune.stopping`).

    Progress goes to the `kcnn` logger (`logging.getLogger("kcnn")`), one INFO line
    per finished trial (`TrialRecord.progress_line`) and one per reference and
    retraining run, shown on stderr by default and through the program's own
    handlers once it configures logging (`kcnn._log`); `logging.getLogger("kcnn")
    .setLevel(logging.WARNING)` quiets it.

    Example:
        >>> result = search("convnet", "digits", tuner="random", max_trials=5)
        >>> result.best_hyperparameters, result.path

    Args:
        space: "convnet", "resnet", "inception", or a `SearchSpace` (whose input
            shape and classes must match the data).
        data: a `kcnn.data.Dataset` or a `kcnn.data.load` source (loaded with the
            train config's batch size, augmentation and seed).
        config: a `SearchConfig` (default `SearchConfig()`).
        callbacks: extra Keras callbacks for every trial's training.
        on_trial: called with a `TrialRecord` when a trial starts (status
            "RUNNING") and when it ends, in the process that runs it.
        ranges: choices for the space's ranges when `space` is a name, e.g.
            `{"depth": (2, 3), "kernel_size": 3}`.
        data_options: more `kcnn.data.load` arguments when `data` is loaded here
            (`kcnn.data.DATA_OPTIONS`), e.g. `{"data_dir": DIR, "download": True,
            "image_size": 32}`; the images are the source's size by default.
        verbose: Keras progress output of each trial's training.
        **options: `SearchConfig` fields, overriding `config`'s.

    Returns:
        A `SearchResult`; the files it names are written to the project folder.

    Raises:
        ValueError: on invalid settings, a project holding a search with other
            settings, or a search in which no trial completed.
        kcnn._lock.FolderInUseError: another local search or chief runs in the
            project (a `ValueError`; the message names the process).
    """
    from kcnn.train.inputs import load_data

    config = config or SearchConfig()
    if not isinstance(config, SearchConfig):
        raise ValueError(f"`config` must be a kcnn.tune.SearchConfig. Received: config={config!r}")
    unknown = sorted(set(options) - {field.name for field in dataclasses.fields(SearchConfig)})
    if unknown:
        raise ValueError(f"Unknown search options {unknown}; see kcnn.tune.SearchConfig. Received: {options!r}")
    config = dataclasses.replace(config, **options)
    folds.check_source(data, config)  # Before the search, not after it.
    source = data  # Loaded again by the finish, with the full recipe's augmentation.
    data = load_data(data, config.train, data_options=data_options)
    if config.objective.startswith("val_") and data.validation is None:
        raise ValueError(
            f"The objective {config.objective!r} needs a validation split, and the data has none. "
            f"Received: data={data.name!r} with validation_split=0"
        )
    space = _make_space(space, data, config, ranges)
    if config.cost == "macs":
        target_macs, reference = cost.resolve_target(
            config.target_macs, references.reference_names(config), data.input_shape, data.num_classes
        )
    else:
        target_macs, reference = None, None  # No MACs term, no bar; the latency target is measured below.
    config = dataclasses.replace(config, target_macs=target_macs)  # Resolved: the MACs, or None.
    budget = TimeBudget(config.time_budget)  # From here: the bar counts; the project's earlier time is added.
    project_dir = project.directory(config, space, data)
    settings = project.settings(space, config, data)
    with project.distributed_env(config), contextlib.ExitStack() as stack:
        role = project.role()
        if role != "worker":
            # The chief (or a local search) alone writes the project's state: another
            # such process in the same project is refused at once. Workers share it.
            stack.enter_context(FolderLock(project_dir, "kcnn search"))
            if config.overwrite:
                project.clear(project_dir)  # Here, not by keras-tuner, which would remove the lock.
                config = dataclasses.replace(config, overwrite=False)
            else:
                project.check_settings(project_dir, settings)  # Before keras-tuner reloads the project.
                project.remove_leftovers(project_dir, role)
        if config.measures_latency:
            # After `overwrite` cleared the project: its cache goes with it.
            space.latency = latency.LatencyMeter(
                latency.LatencyCache(project_dir / latency.CACHE_FILE), batch_size=config.latency_batch_size
            )
            space.max_latency_ms = config.max_latency_ms
        if config.cost == "latency":
            target_ms, _ = cost.resolve_latency_target(
                config.target_latency_ms, references.reference_names(config), data.input_shape, data.num_classes,
                space.latency,
            )  # fmt: skip
            config = dataclasses.replace(config, target_latency_ms=target_ms)
        bar = None
        validation_accuracy = config.objective.startswith("val_") and cost.bounded(
            config.objective, maximize=maximizes(config.objective)
        )
        if role != "worker" and reference is not None and validation_accuracy:
            # The proposals' bar from the start: what the hand-designed net scores as a trial.
            bar = references.reference_bar(reference, data, config, project_dir)
        tuner = make_tuner(
            space, config, project_dir, role, _reporter(config.objective, on_trial), bar=bar, budget=budget
        )
        if role != "worker":
            write_json(project_dir / project.SETTINGS_FILE, settings)
        fit_callbacks = list(callbacks)
        if config.target_macs is not None:
            # First: keras-tuner's callbacks, which Keras calls after it, read the score it logs.
            fit_callbacks.insert(
                0, cost.CostWeighted(config.objective, config.target_macs, maximize=maximizes(config.objective))
            )
        elif config.cost == "latency" and config.target_latency_ms is not None:
            fit_callbacks.insert(
                0,
                cost.CostWeighted(
                    config.objective, config.target_latency_ms, maximize=maximizes(config.objective),
                    measure=_measured_latency(space),
                ),
            )  # fmt: skip
        if config.early_stopping:
            fit_callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=config.objective,
                    patience=config.early_stopping,
                    mode="max" if maximizes(config.objective) else "min",
                )
            )
        try:
            tuner.search(
                data,  # Each trial trains on its training split anew (`SearchSpace.fit`).
                validation_data=data.validation,
                epochs=config.max_epochs,
                callbacks=fit_callbacks,
                verbose=verbose,
            )
        except RuntimeError as error:
            # keras-tuner's stop after `max_consecutive_failed_trials`: the trials so
            # far still make a result.
            if not str(error).startswith("Number of consecutive failures exceeded"):
                raise
            warnings.warn(f"The search stopped early: {str(error).splitlines()[0]}", stacklevel=2)
        if role != "worker":
            tuner.oracle.save()  # With the time the search used, for a resumed one's budget.
        if role == "worker":
            records = tuple(r for r in collect_trials(tuner, project_dir) if r.trial_id in tuner.ran)
            return SearchResult(
                best_hyperparameters=None,
                best_score=None,
                best_trial=None,
                model=None,
                path=None,
                project_dir=project_dir,
                trials=records,
                trials_csv=None,
                plot=None,
                role=role,
                objective=config.objective,
                target_macs=config.target_macs,
                target_latency_ms=config.target_latency_ms,
            )
        bar_reference = reference if bar is not None else None
        search_seconds, started = budget.used(), time.monotonic()
        result = _finish(
            tuner, space, data, config, project_dir, role, bar, bar_reference, source=source, data_options=data_options
        )
        return dataclasses.replace(
            result,
            time_budget=config.time_budget,
            search_seconds=search_seconds,
            finish_seconds=time.monotonic() - started,
        )


# --------------------------------------------------------------------------
# Results.


def _finish(tuner, space, data, config, project_dir, role, bar, reference, *, source=None, data_options=None):
    """What follows the search, in the chief or a local search only: the top trials
    retrained with the full recipe and the references (`kcnn.tune.finish`), the model
    kept in best/ with the verdict against the references (`kcnn.tune.best`),
    trials.csv, finish.csv and the Pareto plot (`bar`: the search's, for its result;
    `reference`: the net it is of, None without a bar)."""
    records = collect_trials(tuner, project_dir)
    maximize = maximizes(config.objective)
    order = [hp.name for hp in tuner.oracle.get_space().space]
    trials_csv, plot = project_dir / TRIALS_FILE, project_dir / PLOT_FILE
    ranked = report.ranked_records(records, maximize=maximize)
    if not ranked:
        report.write_trials_csv(trials_csv, records, config.objective, maximize=maximize, order=order)
        pareto_plot.plot_pareto(
            plot, records, config.objective, maximize=maximize, title=project_dir.name, cost_axis=config.pareto_axis
        )
        reasons = sorted({r.reason for r in records if r.reason})
        raise ValueError(
            f"No trial of the search completed, so there is no best model (see {trials_csv}). "
            f"Widen the space or the budget. Received: {len(records)} trials, failing with: {'; '.join(reasons[:3])}"
        )
    path = project_dir / best_dir.BEST_DIR
    retrained, trained_references = (), ()
    if config.top_k:
        # Of equal scores the cheapest, where keras-tuner would take the first.
        accuracy = "accuracy" in config.objective
        candidates = selection.select_candidates(ranked, config.top_k, data.num_validation, accuracy=accuracy)
        retrained, trained_references = finish.finish_search(
            tuner, space, data, config, project_dir, [tuner.oracle.trials[r.trial_id] for r in candidates],
            source=source, data_options=data_options,
        )  # fmt: skip
        best = tuner.oracle.trials[retrained[0].name]  # The best-ranked trial.
        chosen = selection.choose([*retrained, *trained_references]) or retrained[0]  # Unranked: no validation.
        restored, model = False, None
        others = trained_references
        # After the choice, which they do not change: the chosen run and the references again, other
        # seeds, and on the digits' folds.
        again = [chosen, *trained_references]
        seeds = finish.repeat(tuner, space, data, config, project_dir, again, source=source, data_options=data_options)
        fold_runs = folds.run_folds(tuner, space, data, config, project_dir, again, data_options=data_options)
    else:
        best = tuner.oracle.trials[ranked[0].trial_id]
        model, metadata, restored = best_dir.save_trial(tuner, space, data, config, project_dir, best)
        trial = runs.record(best.trial_id, "trial", path, metadata, search_score=float(best.score))
        candidates = best_dir.without_finish(trial, ranked[0], reference, config, project_dir)
        chosen = selection.choose(candidates)
        others = [r for r in candidates if r.kind == "reference"]
        seeds, fold_runs = {}, {}  # No finish, no repeats, no folds.
        if chosen.kind == "trial":
            chosen = dataclasses.replace(chosen, path=None)  # Its run is best/ itself.
    comparisons = verdict.compare(chosen, others, seeds)
    chosen_seeds = seeds.get((chosen.kind, chosen.name), ())
    over_seeds = verdict.over_seeds(chosen_seeds) if len(chosen_seeds) > 1 else None
    over_folds = folds.fold_facts(chosen, others, fold_runs, config, project_dir)
    facts = best_dir.search_facts(
        space, config, project_dir, best, restored=restored, chosen=chosen, comparisons=comparisons,
        over_seeds=None if over_seeds is None else best_dir.seed_facts(over_seeds, seeds, comparisons, project_dir),
        over_folds=over_folds,
    )  # fmt: skip
    if chosen.path is None:
        best_dir.write_facts(path, facts)
    else:
        model = best_dir.copy_run(chosen, path, facts)
    report.write_trials_csv(trials_csv, records, config.objective, maximize=maximize, order=order, finish=retrained)
    report.write_finish_csv(project_dir / FINISH_FILE, sorted([*retrained, *trained_references], key=_by_rank))
    pareto_plot.plot_pareto(
        plot, records, config.objective, maximize=maximize, title=project_dir.name,
        finish=[*retrained, *trained_references], cost_axis=config.pareto_axis,
    )  # fmt: skip
    return SearchResult(
        best_hyperparameters=public_values(best.hyperparameters),
        best_score=float(best.score),
        best_trial=best.trial_id,
        model=model,
        path=path,
        project_dir=project_dir,
        trials=tuple(records),
        trials_csv=trials_csv,
        plot=plot,
        role=role,
        objective=config.objective,
        target_macs=config.target_macs,
        target_latency_ms=config.target_latency_ms,
        bar=bar,
        retrained=tuple(retrained),
        references=tuple(trained_references),
        chosen=chosen,
        comparisons=tuple(comparisons),
        over_seeds=over_seeds,
        over_folds=over_folds,
    )


def _by_rank(record) -> float:
    return math.inf if record.rank is None else record.rank


# --------------------------------------------------------------------------
# The space, the objective, the progress.


def _reporter(objective, on_trial):
    """The tuner's progress callback: each trial's line to the `kcnn` logger (INFO when
    it ends, DEBUG when it starts; shown by default, `kcnn._log`), then `on_trial`."""

    def report(record):
        logger.log(logging.DEBUG if record.status == "RUNNING" else logging.INFO, record.progress_line(objective))
        if on_trial is not None:
            on_trial(record)

    return report


def _measured_latency(space):
    """The cost of the latency term: the trial's latency, measured when its model was
    built (`SearchSpace.measure`). A plain function, which keras-tuner's deep copy of
    the callbacks leaves pointing at the search's own space."""

    def measured(model):
        return space.last_build.get("latency_ms")

    return measured


def _make_space(space, data, config, ranges) -> SearchSpace:
    budgets = dict(max_params=config.max_params, max_macs=config.max_macs)
    if isinstance(space, str):
        return get_space(
            space, tuple(data.input_shape), data.num_classes, train=config.train, **budgets, **dict(ranges or {})
        )
    if not isinstance(space, SearchSpace):
        raise ValueError(f"`space` must be a space name or a kcnn.tune.SearchSpace. Received: space={space!r}")
    if ranges:
        raise ValueError(
            f"`ranges` apply to a space given by name; pass them to the space instead. Received: ranges={ranges!r}"
        )
    space = copy.copy(space)  # Given the search's budgets and training settings below.
    if tuple(space.input_shape) != tuple(data.input_shape) or space.classes != data.num_classes:
        raise ValueError(
            f"The space is for {space.input_shape} images and {space.classes} classes, the data has "
            f"{tuple(data.input_shape)} and {data.num_classes}. Received: space={space.name!r}, data={data.name!r}"
        )
    for name, value in budgets.items():
        if value is not None and getattr(space, name) not in (None, value):
            raise ValueError(
                f"`{name}` differs between the config and the space. "
                f"Received: {name}={value!r}, space.{name}={getattr(space, name)!r}"
            )
        if value is not None:
            setattr(space, name, value)
    space.train = config.train
    return space

