"""k-fold scores on the bundled digits (`SearchConfig.folds`): the chosen model and each
reference tested on every one of the 1,797 images once.

One test split of 360 images measures a model to about ±0.5 points; the spread over
seeds (`kcnn.tune.finish.repeat`) says how much its accuracy moves with its weights
and batches, on those same images. Stratified K-fold cross-validation (`fold_indices`:
scikit-learn's `StratifiedKFold`, seeded by the recipe's seed) tests each model on all
the images instead: once the search has chosen best/, the chosen run and each trained
reference are trained K times with the finish's recipe (`run_folds`), fold k's images
as the test split and the other folds as the pool, which is split for training and
validation as the finish splits its own (`validation_split`, stratified, the recipe's
seed). Every run is a resumable `kcnn.train` run folder next to the finish's own
(`finish/trial_<id>_fold<k>/`, `finish/reference_<name>_fold<k>/`, k from 1 to K); a
finished one is read, not trained again, and another K trains them all again
(finish/folds.json). They change nothing of the choice.

The verdict (`fold_facts`, best/metadata.json's "over_folds", and its lines,
`kcnn.tune.verdict.lines`) states each model's mean and sample standard deviation of
its K test accuracies, and against each reference the mean of the per-fold
differences with a paired t interval (`kcnn.tune.verdict.paired_difference`): in each
fold both models are tested on the same images.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any

import numpy as np

from kcnn.tune import finish, verdict
from kcnn.tune.config import finish_train_config

__all__ = ["FOLDS_FILE", "SOURCE", "check_source", "fold_facts", "fold_indices", "run_folds"]

#: The one source with k-fold scores: the bundled digits, which are small enough to train K times.
SOURCE = "digits"
#: The k-fold runs' settings, in the finish's folder: other ones train them again.
FOLDS_FILE = "folds.json"
# The finish's `data_options` that a fold's data keeps: how its pool is split and its
# images scaled (they have the finish's size and channels already).
_KEPT_OPTIONS = ("validation_split", "normalize", "shuffle")


def check_source(source, config) -> None:
    """Refuses k-fold scores (`config.folds`) of any source but the bundled digits,
    when the search starts rather than after it."""
    if not config.folds:
        return
    if not (isinstance(source, str) and source == SOURCE):
        what = repr(source) if isinstance(source, (str, os.PathLike)) else f"a {type(source).__name__}"
        raise ValueError(
            f"k-fold scores (`folds`) are for the bundled digits only: data={SOURCE!r}, whose 1,797 images "
            f"are trained K times. Pass folds=0 for other data. Received: folds={config.folds}, data={what}"
        )
    from sklearn.datasets import load_digits

    smallest = int(np.bincount(load_digits().target).min())
    if config.folds > smallest:
        raise ValueError(
            f"`folds` must be at most {smallest}, the images of the digits' smallest class (each fold holds one "
            f"of each class at least). Received: folds={config.folds}"
        )


def fold_indices(labels, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training pool, test) indices of each of `folds` stratified folds of `labels`:
    every class in each fold in its proportion (to one image), each index in one
    test split exactly (scikit-learn's `StratifiedKFold`, shuffled with `seed`)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    return [(pool, test) for pool, test in split]


def run_folds(tuner, space, data, config, project_dir, records, *, data_options=None) -> dict[tuple[str, str], list]:
    """The finish's runs of `records` (the chosen one and the references trained),
    each trained `config.folds` times on the digits' folds (see the module).

    Returns:
        {(kind, name): [the FinishRecord of fold 1, ...]} for each of `records` that was
        trained, once each; {} with `config.folds` 0.
    """
    if not config.folds:
        return {}
    seed = finish_train_config(config).seed
    root = pathlib.Path(project_dir) / finish.FINISH_DIR
    options = {key: value for key, value in (data_options or {}).items() if key in _KEPT_OPTIONS}
    settings = {"folds": config.folds, "seed": seed, "input_shape": list(data.input_shape), "data_options": options}
    finish.check_settings(root, settings, file=FOLDS_FILE, pattern="*_fold*")
    # Loaded when a fold run is to be trained: a resumed search whose runs are done reads them only.
    sources = functools.cache(lambda: _fold_sources(data.input_shape, config.folds, seed))

    def fold_data(fold):
        return sources()[fold[0] - 1], options

    variants = [{"fold": (k, config.folds)} for k in range(1, config.folds + 1)]
    return finish.rerun(tuner, space, data, config, project_dir, records, variants, fold_data)


def _fold_sources(input_shape, folds, seed) -> list[dict[str, Any]]:
    """The arrays source (`kcnn.data.load`) of each fold: the digits as the search
    loaded them (`input_shape`), the fold's images as the test split, the rest as the
    pool (its validation split carved by `load`, stratified)."""
    from kcnn import data as kdata

    size, channels = tuple(input_shape[:2]), int(input_shape[2])
    # In the source's order, unsplit and unscaled: the uint8 images every run of the finish trains on.
    digits = kdata.load(SOURCE, image_size=size, channels=channels, validation_split=0.0, test_split=0.0, normalize=None, shuffle=False)
    x, y = kdata.as_numpy(digits.train)
    x = x.astype(np.uint8)  # Whole pixel values 0..255 in float32: exact.
    return [
        {"x_train": x[pool], "y_train": y[pool], "x_test": x[test], "y_test": y[test], "class_names": digits.class_names}
        for pool, test in fold_indices(y, folds, seed)
    ]


def fold_facts(chosen, references, folds, config, project_dir) -> dict[str, Any] | None:
    """best/metadata.json's "over_folds" (None without k-fold runs): K, the images,
    the split's seed; the chosen model's test accuracies over the folds
    (`kcnn.tune.verdict.spread`); against each other reference trained, its own and
    the `paired_difference`; the verdicts; and every run folder, relative to the project.

    Args:
        chosen: the `FinishRecord` of best/.
        references: the finish's references.
        folds: `run_folds`' runs.
        config: the `SearchConfig`.
        project_dir: the project folder.
    """
    mine = folds.get((chosen.kind, chosen.name))
    if not mine:
        return None
    tests = [run.test for run in mine]
    against = {}
    for reference in references:
        theirs = folds.get((reference.kind, reference.name))
        if theirs and (reference.kind, reference.name) != (chosen.kind, chosen.name):
            accuracies = [run.test for run in theirs]
            against[reference.name] = {"reference": verdict.spread(accuracies), **verdict.paired_difference(tests, accuracies)}
    project_dir = pathlib.Path(project_dir)
    return {
        "folds": config.folds,
        "images": sum(run.test_examples for run in mine),
        "stratified": True,
        "seed": finish_train_config(config).seed,
        "test": verdict.spread(tests),
        "against": against,
        "verdicts": {name: facts["verdict"] for name, facts in against.items()},
        "runs": {runs[0].label: [run.path.relative_to(project_dir).as_posix() for run in runs] for runs in folds.values()},
    }
