"""The search's reference nets: the registered lecture nets of
`SearchConfig.references` (LeNet-5, the default ConvNet), trained on the search's data
as points to beat.

Two runs of each kind, both `kcnn.train` run folders that a resumed search reads
instead of training again:

    bar/<name>/             the cheapest reference trained as a trial is (`reference_bar`):
                            the score a proposal must be able to beat (`kcnn.tune.cost`)
    finish/reference_<name>/  each reference trained with the finish's recipe
                            (`train_reference`), a candidate for best/ like the
                            retrained trials (`kcnn.tune.finish`); its repeats with
                            other seeds in finish/reference_<name>_seed<k>/, its
                            k-fold runs in finish/reference_<name>_fold<k>/

Each is seeded from the train config's seed and the net's name (`kcnn.tune.seeding`),
so two searches with the same seed train them to the same scores.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import warnings

from kcnn.tune import runs
from kcnn.tune.config import finish_train_config
from kcnn.tune.seeding import seeded
from kcnn.tune.selection import FinishRecord

__all__ = ["BAR_DIR", "reference_bar", "reference_names", "run_facts", "run_suffix", "run_text", "train_reference"]

logger = logging.getLogger("kcnn")

BAR_DIR = "bar"


def reference_names(config) -> tuple[str, ...]:
    """The registered models of `config.references` ("lenet5,convnet"), in order."""
    text = config.references or ""
    return tuple(name.strip() for name in text.split(",") if name.strip() and name.strip().lower() != "none")


def reference_bar(name, data, config, project_dir) -> float | None:
    """The bar of a search with a cost term: the registered model `name` (its cheapest
    reference) trained as a trial is (the trial recipe, `config.max_epochs` epochs),
    scored by its best epoch's objective (`val_<metric>`). At the target's MACs, this is
    also its score; a configuration whose cost factor is below it could not beat the
    hand-designed net even at 100% accuracy, and is not proposed (`kcnn.tune.cost`).

    The run is a `kcnn.train` run folder in `<project>/bar/<name>/`: a resumed search
    reads it instead of training it again. None when the objective is not logged.
    """
    from kcnn import registry, train

    run = bar_run(name, project_dir)
    metadata = runs.completed(run)
    if metadata is None:
        recipe = dataclasses.replace(config.train, epochs=config.max_epochs, monitor=config.objective)
        logger.info("search: training the reference %s as a trial (%d epochs), the bar to beat", name, recipe.epochs)
        with seeded(recipe.seed, "bar", name):
            model = registry.create_model(name, input_shape=tuple(data.input_shape), classes=data.num_classes)
            metadata = train.fit(model, data.restarted(), recipe, output=run, verbose=0).metadata
    validation = (metadata.get("metrics") or {}).get("validation") or {}
    value = validation.get(config.objective.removeprefix("val_"))
    return None if value is None else float(value)


def bar_run(name, project_dir) -> pathlib.Path:
    """The run folder of the reference `name` trained as a trial."""
    return pathlib.Path(project_dir) / BAR_DIR / name


def train_reference(name, root, source, data, config, data_options, *, seed=0, fold=None) -> FinishRecord:
    """The reference `name` trained with the finish's recipe in `root/reference_<name>/`
    (resumed, or read when finished), or a record of why it was not (a net that does
    not fit the data, with a warning).

    `seed` k > 0: the finish's k-th repeat (`kcnn.tune.finish.repeat`), in
    `root/reference_<name>_seed<k>/`, from other initial weights; `source` is then the
    repeat's data (its own batch order and augmentation). `fold` (k, K): the k-th of
    the K k-fold runs (`kcnn.tune.folds`), in `root/reference_<name>_fold<k>/`, from
    seed 0's initial weights, on `source` that fold's data.

    Raises:
        ValueError: `name` is not a registered model.
    """
    from kcnn import registry

    run = pathlib.Path(root) / (f"reference_{name}" + run_suffix(seed, fold))
    metadata = runs.completed(run)
    if metadata is None:
        try:
            registry.get_spec(name)
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"`references` must name registered models (kcnn.list_models()). Received: references={config.references!r}"
            ) from error
        recipe = finish_train_config(config)
        logger.info("finish: training the reference %s with the full recipe (%d epochs)%s", name, recipe.epochs, run_text(seed, fold))
        kwargs = {"input_shape": tuple(data.input_shape), "classes": data.num_classes}
        try:
            # Seed 0's keys are those of the runs before repeats existed: their folders stay valid.
            with seeded(recipe.seed, name, *(("seed", seed) if seed else ())):
                metadata = runs.fit(name, source, recipe, run, data_options, model_kwargs=kwargs, search=run_facts(seed, fold))
        except ValueError as error:
            if not str(error).startswith("The input is too small"):
                raise
            # A lecture net that does not fit the data is no reference for it.
            reason = str(error).splitlines()[0]
            shutil.rmtree(run, ignore_errors=True)
            warnings.warn(f"The reference {name} is not trained: {reason}", stacklevel=3)
            return FinishRecord(name, "reference", reason=reason)
    return runs.record(name, "reference", run, metadata)


def run_suffix(seed: int = 0, fold: tuple[int, int] | None = None) -> str:
    """The end of the run folder of the finish's repeat `seed` ("" for seed 0, the
    finish's own run; "_seed2" for the third) or of its k-fold run `fold` = (k, K)
    ("_fold1" for the first of K)."""
    return (f"_seed{seed}" if seed else "") + (f"_fold{fold[0]}" if fold else "")


def run_facts(seed: int = 0, fold: tuple[int, int] | None = None) -> dict | None:
    """What a repeat's or a k-fold run's metadata.json records of it under "search"
    (None for seed 0, whose run records what it did before repeats existed)."""
    facts = {**({"seed": seed} if seed else {}), **({"fold": fold[0], "folds": fold[1]} if fold else {})}
    return facts or None


def run_text(seed: int = 0, fold: tuple[int, int] | None = None) -> str:
    """The end of the log line of a run that trains (", seed 2", ", fold 1 of 5")."""
    return (f", seed {seed}" if seed else "") + (f", fold {fold[0]} of {fold[1]}" if fold else "")
