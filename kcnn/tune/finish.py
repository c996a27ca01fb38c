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

Every run is a `kcnn.train` run folder under `<project>/finish/` (`trial_<id>/`,
`reference_<name>/`): an interrupted finish resumes where it stopped, a finished run is
not trained again. A trial's model is built as the search built it (its initial
weights seeded from the configuration, `kcnn.tune.seeding`), so two searches with the
same seed retrain to the same scores and ranking.
"""

from __future__ import annotations

import logging
import math
import pathlib
import shutil

from kcnn._files import CorruptFileError, read_json, write_json
from kcnn.tune import runs
from kcnn.tune.config import finish_train_config
from kcnn.tune.references import reference_names, train_reference
from kcnn.tune.selection import rank

__all__ = ["FINISH_DIR", "finish_search"]

logger = logging.getLogger("kcnn")

FINISH_DIR = "finish"
SETTINGS_FILE = "finish.json"


def finish_search(tuner, space, data, config, project_dir, candidates, *, source=None, data_options=None):
    """Retrains `candidates` (keras-tuner trials, best first) and trains the references.

    Args:
        tuner: the search's tuner (its oracle's trials give the hyperparameters).
        space: the `SearchSpace`.
        data: the search's `kcnn.data.Dataset`.
        config: the `SearchConfig`, its `target_macs` resolved (the ranking charges the
            cost as the search did).
        project_dir: the project folder.
        candidates: the trials to retrain, best first.
        source: what `data` was loaded from (a name, a path, arrays), to load it again
            with the recipe's augmentation; None: `data` itself (its own augmentation).
        data_options: the `kcnn.data.load` options `data` was loaded with.

    Returns:
        (retrained, references): `FinishRecord`s ranked together (`rank`), the
        retrained by rank, the references in `config.references`' order.
    """
    from kcnn.tune._keras_tuner import public_values

    root = pathlib.Path(project_dir) / FINISH_DIR
    settings = {
        "candidates": [trial.trial_id for trial in candidates],
        "references": list(reference_names(config)),
        "recipe": finish_train_config(config).to_dict(),
        "data": {"input_shape": list(data.input_shape), "classes": data.num_classes},
    }
    _check_finish_settings(root, settings)
    source = data if source is None else source
    space.execution = 0  # Each trial's first execution: its initial weights in the search.
    retrained = []
    for trial in candidates:
        hp = trial.hyperparameters
        run = root / f"trial_{trial.trial_id}"
        recipe = finish_train_config(config, hp.values.get("learning_rate"))
        metadata = runs.completed(run)
        if metadata is None:
            logger.info("finish: retraining trial %s with the full recipe (%d epochs)", trial.trial_id, recipe.epochs)
            model = space.build(hp.copy())  # With the trial's initial weights (seeded).
            arguments = {**space.declare(hp.copy()), "input_shape": list(space.input_shape), "classes": space.classes}
            search = {"trial_id": trial.trial_id, "score": float(trial.score), "hyperparameters": public_values(hp)}
            model_facts = {"builder": space.builder_name, "builder_arguments": arguments}
            metadata = runs.fit(model, source, recipe, run, data_options, model_facts=model_facts, search=search)
        retrained.append(runs.record(trial.trial_id, "trial", run, metadata, search_score=float(trial.score)))
    references = [train_reference(name, root, source, data, config, data_options) for name in reference_names(config)]
    ranked = {(r.kind, r.name): r for r in rank([*retrained, *references], config.target_macs)}
    retrained = [ranked[("trial", r.name)] for r in retrained]
    retrained.sort(key=lambda r: math.inf if r.rank is None else r.rank)
    return retrained, [ranked[("reference", r.name)] for r in references]


def _check_finish_settings(root, settings):
    """A finish with other candidates, references, recipe or data starts afresh (its runs
    are of another finish); the same one resumes."""
    try:
        previous = read_json(root / SETTINGS_FILE)
    except CorruptFileError:
        previous = None
    if previous is not None and previous != settings:
        logger.info("finish: the settings changed since the runs in %s; they are trained again", root)
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / SETTINGS_FILE, settings)
