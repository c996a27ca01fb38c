"""The finish of a search: its top configurations retrained with the full `kcnn train`
recipe, scored on validation and test, and the best chosen among them and the
registered lecture nets trained the same way, the references: a reference is a
candidate for best/ like a retrained trial, under the same score and rule.

A trial is a short run (a few epochs, no augmentation): good for ranking many
configurations, not for the model a user keeps. `finish_search` retrains `top_k`
trials (`kcnn.tune.selection.select_candidates`) with `kcnn.train.fit` and the
finish's recipe (`kcnn.tune.config.finish_train_config`: `TrainConfig()`'s
augmentation, cosine schedule, `finish_epochs` epochs; the trial's learning rate),
trains the `references` (`kcnn.tune.references`) with the same recipe on the same
data, and ranks them all by the rule of `kcnn.tune.selection`: the retrained trials
and the references alike, so that `best/` is a reference when no trial beats it
(`kcnn.tune.verdict` states how the chosen model compares with each reference).
The cost charged is the search's (`SearchConfig.cost`): with "latency", each run's
measured latency (`with_latency`), a trial's the very figure the search measured.

Every run is a `kcnn.train` run folder under `<project>/finish/` (`trial_<id>/`,
`reference_<name>/`): an interrupted finish resumes where it stopped, a finished run is
not trained again. Once `best/` is chosen, `repeat` trains the chosen run and each
reference again with seeds 1 to `SearchConfig.seeds - 1` (`trial_<id>_seed<k>/`,
`reference_<name>_seed<k>/`, as resumable), for the verdict's spread over seeds
(`kcnn.tune.verdict`); they choose nothing, nor do the k-fold runs on the digits
(`kcnn.tune.folds`, `*_fold<k>/`), both trained by `rerun`. A trial's model is built
as the search built it (its initial weights seeded from the configuration,
`kcnn.tune.seeding`), so two searches with the same seed retrain to the same scores
and ranking.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import pathlib
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kcnn._files import CorruptFileError, read_json, write_json
from kcnn.tune import runs
from kcnn.tune.config import finish_train_config
from kcnn.tune.cost import reference_latency
from kcnn.tune.references import reference_names, run_facts, run_suffix, run_text, train_reference
from kcnn.tune.seeding import derived_seed
from kcnn.tune.selection import FinishRecord, rank

__all__ = ["FINISH_DIR", "check_settings", "finish_search", "repeat", "rerun", "retrain", "with_latency"]

logger = logging.getLogger("kcnn")

FINISH_DIR = "finish"
SETTINGS_FILE = "finish.json"


def finish_search(tuner, space, data, config, project_dir, candidates, *, source=None, data_options=None):
    """Retrains `candidates` (keras-tuner trials, best first) and trains the references.

    Args:
        tuner: the search's tuner (its oracle's trials give the hyperparameters).
        space: the `SearchSpace`.
        data: the search's `kcnn.data.Dataset`.
        config: the `SearchConfig`, its `target_macs` and `target_latency_ms`
            resolved (the ranking charges the cost as the search did).
        project_dir: the project folder.
        candidates: the trials to retrain, best first.
        source: what `data` was loaded from (a name, a path, arrays), to load it again
            with the recipe's augmentation; None: `data` itself (its own augmentation).
        data_options: the `kcnn.data.load` options `data` was loaded with.

    Returns:
        (retrained, references): `FinishRecord`s ranked together (`rank`), the
        retrained by rank, the references in `config.references`' order; with their
        latency when the search measures it (`with_latency`).
    """
    root = pathlib.Path(project_dir) / FINISH_DIR
    settings = {
        "candidates": [trial.trial_id for trial in candidates],
        "references": list(reference_names(config)),
        "recipe": finish_train_config(config).to_dict(),
        "data": {"input_shape": list(data.input_shape), "classes": data.num_classes},
    }
    check_settings(root, settings)
    source = data if source is None else source
    retrained = [retrain(trial, space, root, source, config, data_options) for trial in candidates]
    references = [train_reference(name, root, source, data, config, data_options) for name in reference_names(config)]
    retrained, references = with_latency(retrained, space, candidates), with_latency(references, space)
    ranked = {(r.kind, r.name): r for r in rank([*retrained, *references], config.cost_target, cost=config.cost)}
    retrained = [ranked[("trial", r.name)] for r in retrained]
    retrained.sort(key=lambda r: math.inf if r.rank is None else r.rank)
    return retrained, [ranked[("reference", r.name)] for r in references]


def retrain(trial, space, root, source, config, data_options, *, seed=0, fold=None) -> FinishRecord:
    """The keras-tuner `trial` retrained with the finish's recipe in
    `root/trial_<id>/` (resumed, or read when finished).

    The model is built as the search built the trial's execution `seed`
    (`SearchSpace.execution`: seeded from its configuration, `kcnn.tune.seeding`): seed
    0 from the trial's initial weights in the search; a repeat k > 0
    (`repeat`, in `root/trial_<id>_seed<k>/`) from those of its execution k, on
    `source` the repeat's data. `fold` (k, K): the k-th k-fold run
    (`kcnn.tune.folds`, in `root/trial_<id>_fold<k>/`), on `source` that fold's data.
    """
    from kcnn.tune._keras_tuner import public_values

    hp = trial.hyperparameters
    run = pathlib.Path(root) / (f"trial_{trial.trial_id}" + run_suffix(seed, fold))
    recipe = finish_train_config(config, hp.values.get("learning_rate"))
    metadata = runs.completed(run)
    if metadata is None:
        logger.info("finish: retraining trial %s with the full recipe (%d epochs)%s", trial.trial_id, recipe.epochs, run_text(seed, fold))
        space.execution = seed
        try:
            model = space.build(hp.copy())  # With the initial weights of the trial's execution `seed` (seeded).
        finally:
            space.execution = 0
        arguments = {**space.declare(hp.copy()), "input_shape": list(space.input_shape), "classes": space.classes}
        search = {"trial_id": trial.trial_id, "score": float(trial.score), "hyperparameters": public_values(hp)}
        model_facts = {"builder": space.builder_name, "builder_arguments": arguments}
        search.update(run_facts(seed, fold) or {})
        metadata = runs.fit(model, source, recipe, run, data_options, model_facts=model_facts, search=search)
    return runs.record(trial.trial_id, "trial", run, metadata, search_score=float(trial.score))


def with_latency(records, space, trials=()) -> list[FinishRecord]:
    """`records` with their measured latency (`FinishRecord.latency_ms`), when the
    search measures latency (`space.latency`, its `kcnn.tune.latency.LatencyMeter`);
    else as they are, nothing measured.

    Each is keyed as the search keys it, so that a figure the search measured is read
    from the project's cache, not measured again: a trial (of the keras-tuner `trials`)
    by its configuration (`SearchSpace.measured_latency`), a reference as the latency
    target is (`kcnn.tune.cost.reference_latency`). A reference not trained keeps none.
    """
    if space.latency is None:
        return list(records)
    hyperparameters = {trial.trial_id: trial.hyperparameters for trial in trials}
    measured = []
    for record in records:
        if record.reason is None:
            if record.kind == "trial":
                figure = space.measured_latency(hyperparameters[record.name])
            else:
                figure = reference_latency(record.name, space.input_shape, space.classes, space.latency)
            record = dataclasses.replace(record, latency_ms=figure.median_ms, latency_spread_ms=figure.spread_ms)
        measured.append(record)
    return measured


def repeat(tuner, space, data, config, project_dir, records, *, source=None, data_options=None) -> dict:
    """The finish's runs of `records` (the chosen one and the references trained)
    repeated with seeds 1 to `config.seeds - 1`: the same recipe and split, other
    initial weights and dropout masks (seeded from the configuration or the net's name
    and the seed, `kcnn.tune.seeding`) and another batch order and augmentation
    (`kcnn.data.Dataset.reshuffled`, its seed derived from the recipe's and the seed,
    the same for every model: repeat k of each sees the same batches).

    Each repeat is a run folder next to its seed 0's (`trial_<id>_seed<k>/`,
    `reference_<name>_seed<k>/`): an interrupted repeat resumes, a finished one is read,
    not trained again. A later search with more seeds trains only the new ones.

    Returns:
        {(kind, name): [the FinishRecord of seed 0, of seed 1, ...]} for each of
        `records` that was trained (a reference that does not fit the data has no runs).
    """
    seeds = {(r.kind, r.name): [r] for r in records if r.reason is None and r.path is not None}
    if config.seeds < 2 or not seeds:
        return seeds
    # Loaded when a repeat is to be trained: a resumed search whose repeats are done reads them only.
    base = functools.cache(lambda: _repeat_data(source if source is not None else data, data, config, data_options))
    recipe_seed = finish_train_config(config).seed  # The split's, which the repeats keep.

    def reshuffled(seed):
        return base().reshuffled(derived_seed(recipe_seed, "finish seed", seed)), None

    variants = [{"seed": seed} for seed in range(1, config.seeds)]
    for key, repeats in rerun(tuner, space, data, config, project_dir, records, variants, reshuffled).items():
        seeds[key].extend(repeats)
    return seeds


def rerun(
    tuner, space, data, config, project_dir, records, variants: Iterable[Mapping[str, Any]], load: Callable
) -> dict[tuple[str, str], list[FinishRecord]]:
    """The finish's runs of `records` trained again, once per variant, variant by
    variant: `{"seed": k}`, a repeat from other seeds (`repeat`), or `{"fold": (k, K)}`,
    a k-fold run (`kcnn.tune.folds`); `retrain`'s and `train_reference`'s keywords.

    Each run is a folder next to the record's (its name and `run_suffix(**variant)`):
    an interrupted one resumes, a finished one is read. `load(**variant)` gives the
    (source, data_options) of a variant's runs, asked only for a run to train.

    Returns:
        {(kind, name): [a FinishRecord per variant]} for each of `records` that was
        trained (a reference that does not fit the data has no runs), once each.
    """
    root = pathlib.Path(project_dir) / FINISH_DIR
    # Once each: the chosen run may be a reference.
    trained = {(r.kind, r.name): r for r in records if r.reason is None and r.path is not None}
    done: dict[tuple[str, str], list[FinishRecord]] = {key: [] for key in trained}
    for variant in variants:
        for key, record in trained.items():
            finished = runs.completed(record.path.with_name(record.path.name + run_suffix(**variant)))
            source, options = (None, None) if finished is not None else load(**variant)
            if record.kind == "trial":
                run = retrain(tuner.oracle.trials[record.name], space, root, source, config, options, **variant)
            else:
                run = train_reference(record.name, root, source, data, config, options, **variant)
            done[key].append(run)
    return done


def _repeat_data(source, data, config, data_options):
    """The data of the repeats: `source` loaded as the finish's runs load it (the
    recipe's batch size, augmentation and seed, hence its split), once for all."""
    from kcnn import data as kdata
    from kcnn.train.inputs import load_data

    recipe = finish_train_config(config)
    if isinstance(source, kdata.Dataset):
        return source.with_batch_size(recipe.batch_size)
    return load_data(source, recipe, input_shape=tuple(data.input_shape), data_options=data_options)


def check_settings(root, settings, *, file=SETTINGS_FILE, pattern=None):
    """A finish with other candidates, references, recipe or data starts afresh (its runs
    are of another finish); the same one resumes. With `pattern`, the settings in
    `root/file` are those of the runs of `root` it matches (the k-fold runs'), which
    alone are trained again when they change."""
    root = pathlib.Path(root)
    try:
        previous = read_json(root / file)
    except CorruptFileError:
        previous = None
    if previous is not None and previous != settings:
        logger.info("finish: the settings changed since the runs in %s; they are trained again", root)
        for run in [root] if pattern is None else root.glob(pattern):
            shutil.rmtree(run, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / file, settings)
