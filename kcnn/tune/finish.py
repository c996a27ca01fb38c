"""The finish of a search: its top configurations retrained with the full `kcnn train`
recipe, scored on validation and test, the best chosen among them, and the registered
lecture nets trained the same way as reference points.

A trial is a short run (a few epochs, no augmentation): good for ranking many
configurations, not for the model a user keeps. `finish_search` retrains `top_k`
trials (`select_candidates`: the cheapest of those whose score the validation split
cannot tell from the best one's, then the next best, the best always among them) with
`kcnn.train.fit` and `TrainConfig()`'s recipe (augmentation, cosine schedule,
`finish_epochs` epochs; the trial's learning rate), trains the `references`
(LeNet-5, the default ConvNet) with the same recipe on the same data, and ranks the
retrained candidates by their score, the validation accuracy weighed by the search's
cost term (`kcnn.tune.cost`; without one, the validation accuracy itself):

    the best is the cheapest (fewest MACs, then parameters) candidate whose score is
    within one standard error of the difference from the top one's,

the standard error of an accuracy measured on n images being sqrt(q (1 - q) / n), q
its Laplace estimate (`standard_error`), and that of the difference of two
sqrt(se1**2 + se2**2). On the digits' 179 validation images one image is 0.56 points:
100% and 99.44%, or 99.44% and 98.88%, differ by less than their standard error (0.96
and 1.23 points), and the data does not tell them apart, so the cheaper is taken. The
test split is reported, never used to choose.

Every run is a `kcnn.train` run folder under `<project>/finish/` (`trial_<id>/`,
`reference_<name>/`): an interrupted finish resumes where it stopped, a finished run is
not trained again. Weight initialization is seeded from the train config's seed (the
Python `random` state keras draws its default seeds from, restored afterwards), so two
searches with the same seed retrain to the same scores and ranking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import pathlib
import random
import shutil
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from kcnn._files import CorruptFileError, read_json, write_json
from kcnn.tune.cost import factor, weigh

__all__ = [
    "FinishRecord",
    "finish_search",
    "finish_train_config",
    "rank",
    "seeded",
    "select_candidates",
    "standard_error",
]

logger = logging.getLogger("kcnn")

FINISH_DIR = "finish"
SETTINGS_FILE = "finish.json"


@dataclasses.dataclass(frozen=True)
class FinishRecord:
    """One full-recipe run of the finish: a retrained trial or a reference net.

    Attributes:
        name: the trial id ("0006") or the registered model's name ("lenet5").
        kind: "trial" or "reference".
        validation: validation accuracy of the run's best epoch (None without a
            validation split).
        validation_examples: images it is measured on.
        test: test accuracy (None without a test split).
        test_examples: images it is measured on.
        params: parameters of the model.
        macs: multiply-accumulates per image.
        search_score: the trial's score in the search (None for a reference).
        score: the validation accuracy weighed by the search's cost term (`rank`
            sets it; None for a reference).
        rank: 1 for the chosen model, then the order of the ranking (None for a
            reference).
        path: the run folder.
        reason: why a reference was not trained (it does not fit the data), else None.
    """

    name: str
    kind: str
    validation: float | None = None
    validation_examples: int | None = None
    test: float | None = None
    test_examples: int | None = None
    params: int | None = None
    macs: int | None = None
    search_score: float | None = None
    score: float | None = None
    rank: int | None = None
    path: pathlib.Path | None = None
    reason: str | None = None

    @property
    def validation_error(self) -> float | None:
        """The standard error of `validation`."""
        return standard_error(self.validation, self.validation_examples)

    @property
    def test_error(self) -> float | None:
        """The standard error of `test`."""
        return standard_error(self.test, self.test_examples)

    @property
    def label(self) -> str:
        return f"trial {self.name}" if self.kind == "trial" else self.name


def standard_error(accuracy: float | None, examples: int | None) -> float | None:
    """sqrt(q (1 - q) / n), the standard error of an accuracy measured on n images,
    with q = (k + 1) / (n + 2) for k right of n (Laplace's rule: 179 of 179 right is
    no proof that the error rate is 0, and its standard error is not 0)."""
    if accuracy is None or not examples:
        return None
    q = (accuracy * examples + 1) / (examples + 2)
    return math.sqrt(q * (1 - q) / examples)


def rank(records: Sequence[FinishRecord], target_macs: int | None = None) -> list[FinishRecord]:
    """The retrained candidates in the order of the module's rule, with their `score`:
    those whose score (validation accuracy times `kcnn.tune.cost.factor(macs,
    target_macs)`) is within one standard error of the difference from the top one's
    (the errors scaled by the same factors), cheapest first (MACs, then parameters,
    then the higher score, then the id), then the others by score."""
    scored = [
        dataclasses.replace(r, score=weigh(r.validation, r.macs, target_macs))
        for r in records
        if r.validation is not None
    ]
    if not scored:
        return list(records)

    def error(r):
        return (r.validation_error or 0.0) * factor(r.macs, target_macs)

    top = max(scored, key=lambda r: r.score)
    tied = [r for r in scored if top.score - r.score <= math.hypot(error(top), error(r)) + 1e-12]
    rest = [r for r in scored if r not in tied]
    tied.sort(key=lambda r: (_cost(r.macs), _cost(r.params), -r.score, r.name))
    rest.sort(key=lambda r: (-r.score, _cost(r.macs), r.name))
    unscored = [r for r in records if r.validation is None]
    return [dataclasses.replace(r, rank=i + 1) for i, r in enumerate([*tied, *rest])] + unscored


def select_candidates(records, k: int, examples: int | None, *, accuracy: bool = True) -> list:
    """The `k` trials the finish retrains, from the completed `records` ranked best first
    (`kcnn.tune.report.ranked_records`): those whose search score is within one standard
    error of the difference from the best one's (when the score is an accuracy measured
    on `examples` images, or one weighed by the cost term: its error weighed alike),
    cheapest first, then the next best by score; the best one always among them (in place
    of the last), so that the cheaper ties are retrained against it."""
    if not records:
        return []
    top = records[0]

    def error(record):
        if not accuracy or not record.value:
            return 0.0
        return (standard_error(record.value, examples) or 0.0) * record.score / record.value

    tied = [r for r in records if abs(top.score - r.score) <= math.sqrt(error(top) ** 2 + error(r) ** 2) + 1e-12]
    tied.sort(key=lambda r: (_cost(r.macs), _cost(r.params), r.number))
    rest = [r for r in records if r not in tied]
    chosen = [*tied, *rest][:k]
    return chosen if top in chosen else [*chosen[: k - 1], top]


def finish_train_config(config, learning_rate: float | None = None):
    """The recipe of `kcnn train` (`TrainConfig()`): its augmentation, batch size and
    schedule, `config.finish_epochs` epochs, the search's seed and device settings, and
    the trial's learning rate."""
    from kcnn.train.config import TrainConfig

    device = {key: getattr(config.train, key) for key in ("mixed_precision", "xla", "distribution", "steps_per_execution")}
    changes = dict(epochs=config.finish_epochs, seed=config.train.seed, **device)
    if learning_rate is not None:
        changes["learning_rate"] = float(learning_rate)
    return dataclasses.replace(TrainConfig(), **changes)


@contextlib.contextmanager
def seeded(seed: int, *keys: Any):
    """Python's `random`, from which Keras draws the seeds of initializers and dropout
    layers made without one, seeded from `seed` and `keys` for the block, then restored:
    the same configuration builds with the same weights, and the caller's state is as it was."""
    state = random.getstate()
    random.seed(zlib.crc32(repr((seed, *keys)).encode()))
    try:
        yield
    finally:
        random.setstate(state)


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
        (retrained, references): `FinishRecord`s, the retrained ranked (`rank`).
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
    retrained = []
    for trial in candidates:
        hp = trial.hyperparameters
        run = root / f"trial_{trial.trial_id}"
        recipe = finish_train_config(config, hp.values.get("learning_rate"))
        metadata = _completed(run)
        if metadata is None:
            logger.info("finish: retraining trial %s with the full recipe (%d epochs)", trial.trial_id, recipe.epochs)
            model = space.build(hp.copy())  # With the trial's initial weights (seeded).
            arguments = {**space.declare(hp.copy()), "input_shape": list(space.input_shape), "classes": space.classes}
            search = {"trial_id": trial.trial_id, "score": float(trial.score), "hyperparameters": public_values(hp)}
            model_facts = {"builder": space.builder_name, "builder_arguments": arguments}
            metadata = _fit(model, source, recipe, run, data_options, model_facts=model_facts, search=search)
        retrained.append(_record(trial.trial_id, "trial", run, metadata, search_score=float(trial.score)))
    references = [_reference(name, root, source, data, config, data_options) for name in reference_names(config)]
    return rank(retrained, config.target_macs), references


BAR_DIR = "bar"


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

    run = pathlib.Path(project_dir) / BAR_DIR / name
    metadata = _completed(run)
    if metadata is None:
        recipe = dataclasses.replace(config.train, epochs=config.max_epochs, monitor=config.objective)
        logger.info("search: training the reference %s as a trial (%d epochs), the bar to beat", name, recipe.epochs)
        with seeded(recipe.seed, "bar", name):
            model = registry.create_model(name, input_shape=tuple(data.input_shape), classes=data.num_classes)
            metadata = train.fit(model, data, recipe, output=run, verbose=0).metadata
    validation = (metadata.get("metrics") or {}).get("validation") or {}
    value = validation.get(config.objective.removeprefix("val_"))
    return None if value is None else float(value)


def reference_names(config) -> tuple[str, ...]:
    """The registered models of `config.references` ("lenet5,convnet"), in order."""
    text = config.references or ""
    return tuple(name.strip() for name in text.split(",") if name.strip() and name.strip().lower() != "none")


def choose(retrained: Sequence[FinishRecord]) -> FinishRecord | None:
    """The chosen model: rank 1."""
    return next((r for r in retrained if r.rank == 1), None)


def copy_best(record: FinishRecord, best_dir, search_facts: Mapping[str, Any]) -> dict[str, Any]:
    """Makes `best_dir` a copy of the chosen run folder, its metadata extended with the
    search's facts; returns the metadata."""
    best_dir = pathlib.Path(best_dir)
    shutil.rmtree(best_dir, ignore_errors=True)
    shutil.copytree(record.path, best_dir, ignore=shutil.ignore_patterns("kcnn.lock", "*.tmp*"))
    metadata = read_json(best_dir / "metadata.json")
    metadata["kind"] = "search"
    metadata["search"] = {**metadata.get("search", {}), **search_facts}
    write_json(best_dir / "metadata.json", metadata)
    return metadata


# --------------------------------------------------------------------------


def _reference(name, root, source, data, config, data_options) -> FinishRecord:
    from kcnn import registry

    run = root / f"reference_{name}"
    metadata = _completed(run)
    if metadata is None:
        try:
            registry.get_spec(name)
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"`references` must name registered models (kcnn.list_models()). Received: references={config.references!r}"
            ) from error
        recipe = finish_train_config(config)
        logger.info("finish: training the reference %s with the full recipe (%d epochs)", name, recipe.epochs)
        kwargs = {"input_shape": tuple(data.input_shape), "classes": data.num_classes}
        try:
            with seeded(recipe.seed, name):
                metadata = _fit(name, source, recipe, run, data_options, model_kwargs=kwargs)
        except ValueError as error:
            if not str(error).startswith("The input is too small"):
                raise
            # A lecture net that does not fit the data is no reference for it.
            reason = str(error).splitlines()[0]
            shutil.rmtree(run, ignore_errors=True)
            warnings.warn(f"The reference {name} is not trained: {reason}", stacklevel=3)
            return FinishRecord(name, "reference", reason=reason)
    return _record(name, "reference", run, metadata)


def _fit(model, source, recipe, run, data_options, model_kwargs=None, model_facts=None, search=None) -> dict[str, Any]:
    """Trains (or resumes) the run, then adds its MACs, `model_facts` and `search` to
    its metadata."""
    from kcnn import data as kdata
    from kcnn import shapes, train

    options = None if isinstance(source, kdata.Dataset) else data_options
    result = train.fit(model, source, recipe, output=run, model_kwargs=model_kwargs, data_options=options, verbose=0)
    metadata = result.metadata
    metadata["model"]["macs"] = int(shapes.count_macs(result.model))
    metadata["model"].update(model_facts or {})
    if search is not None:
        metadata["search"] = search
    write_json(pathlib.Path(run) / "metadata.json", metadata)
    return metadata


def _completed(run) -> dict[str, Any] | None:
    """The metadata of a finished run in `run`, else None (no run, or unfinished: it resumes)."""
    try:
        metadata = read_json(pathlib.Path(run) / "metadata.json")
    except CorruptFileError:
        return None
    return metadata if metadata and metadata.get("status") == "completed" else None


def _record(name, kind, run, metadata, search_score=None) -> FinishRecord:
    metrics = metadata.get("metrics") or {}
    validation = metrics.get("validation") or {}
    test = metrics.get("test") or {}
    parameters = metadata["model"].get("parameters") or {}
    return FinishRecord(
        name=name,
        kind=kind,
        validation=validation.get("accuracy"),
        validation_examples=validation.get("examples") or metadata["dataset"].get("num_validation"),
        test=test.get("accuracy"),
        test_examples=test.get("examples"),
        params=parameters.get("total"),
        macs=metadata["model"].get("macs"),
        search_score=search_score,
        path=pathlib.Path(run),
        reason=None,
    )


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


def _cost(value) -> float:
    return math.inf if value is None else value
