"""Search settings as data: `SearchConfig`, whose fields the `kcnn tune` flags map
onto, and the training settings of trials. Imports no keras-tuner, so the command
line builds its flags without it."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from kcnn.train.config import TrainConfig
from kcnn.tune.budget import parse_duration

__all__ = ["COSTS", "PARETO_AXES", "PRUNERS", "SPACE_NAMES", "TUNERS", "SearchConfig", "finish_train_config", "parse_address", "search_train_config"]

TUNERS = ("hyperband", "random", "bayesian", "grid")
#: `SearchConfig.prune`: the median stopping rule (`kcnn.tune.stopping`), or none.
PRUNERS = ("median", "none")
#: `SearchConfig.cost`: what the cost term charges (`kcnn.tune.cost`).
COSTS = ("macs", "latency")
#: `SearchConfig.pareto_axis`: the Pareto plot's cost axis.
PARETO_AXES = ("macs", "params", "latency")
#: The search spaces of `kcnn.tune` (`kcnn.tune.spaces.SPACES`), by name.
SPACE_NAMES = ("convnet", "resnet", "inception")


def search_train_config() -> TrainConfig:
    """The training settings of trials unless given: `TrainConfig()` with batches of
    32, no augmentation and a BatchNorm momentum of 0.9.

    Trials are short: smaller batches make more updates per epoch, and augmentation
    pays off only over longer runs (measured on digits, a 3-stage convnet trained 9
    epochs: 100% validation accuracy from epoch 4 this way, 98.9% at best with
    batches of 64). A trial of a few epochs is a few hundred steps, over which
    BatchNorm's moving statistics at Keras' momentum of 0.99 (a time constant of 100
    steps) have not caught up with the network, and a model with BatchNorm scores at
    chance on validation whatever its configuration; at 0.9 (10 steps) they have.
    The search's finish retrains its best configurations with `kcnn.train.fit`'s
    defaults (`SearchConfig.top_k`).
    """
    return TrainConfig(batch_size=32, augment=None, bn_momentum=0.9)


def finish_train_config(config: SearchConfig, learning_rate: float | None = None) -> TrainConfig:
    """The recipe of the finish's runs (`kcnn.tune.finish`): that of `kcnn train`
    (`TrainConfig()`: its augmentation, batch size and schedule), `config.finish_epochs`
    epochs, the search's seed and device settings, and the trial's learning rate."""
    device = {key: getattr(config.train, key) for key in ("mixed_precision", "xla", "distribution", "steps_per_execution")}
    changes = dict(epochs=config.finish_epochs, seed=config.train.seed, **device)
    if learning_rate is not None:
        changes["learning_rate"] = float(learning_rate)
    return dataclasses.replace(TrainConfig(), **changes)


def _field(default, help, *, choices=None, flags=(), factory=None, parse=None, metavar=None):
    """A config field whose metadata drives the command line (`kcnn tune --help`);
    `parse(text, name)` reads its flag where its type alone would not."""
    metadata = {"help": help, "choices": choices, "flags": flags, "parse": parse, "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How to search. The `kcnn tune` flags map onto these fields.

    The defaults search the convnet space on the bundled digits in about four minutes
    on two CPU cores: two Hyperband sweeps of 10 trials, at most 5 epochs a trial,
    trained as `search_train_config()` says, scored with a cost term above the cheapest
    reference's MACs (`target_macs`), the top 3 retrained with `kcnn train`'s recipe
    (docs/tune_digits.md: 99.44% test at 0.26 M MACs, LeNet-5 98.89% at 0.42 M). Those
    four minutes were measured before the finish's repeats over `seeds` (two more
    trainings of the chosen network and of each reference), whose time is not measured.

    Attributes:
        tuner: "hyperband", "random", "bayesian" or "grid".
        max_trials: the most trials to run. None: Hyperband and grid search run
            their own budget (every bracket, the whole grid); random and Bayesian
            searches run 10.
        max_epochs: epochs of a trial (Hyperband: of its longest trials).
        objective: the logged quantity to optimize, e.g. "val_accuracy" (maximized)
            or "val_loss" (minimized).
        seed: seeds the tuner's proposals, so a search with the same seed proposes
            the same configurations; None: a random seed.
        executions_per_trial: trainings (from fresh weights) averaged per trial.
        early_stopping: stop a trial after this many epochs without improvement of
            the objective; 0 disables it.
        hyperband_factor: Hyperband's reduction factor between rounds.
        hyperband_iterations: Hyperband's full sweeps over its brackets.
        max_params: reject configurations with more parameters (a failed trial).
        max_macs: reject configurations with more multiply-accumulates per image.
        project: the project's name (default "<space>-<dataset>").
        directory: the project folder (default `saved_models/tuning/<project>`).
        overwrite: start afresh; by default an existing project is resumed: its
            finished trials are kept and an interrupted one runs again.
        retrain: with `top_k=0`, retrain the best configuration from scratch (with
            the trial's recipe) instead of restoring its best checkpoint.
        top_k: trials retrained after the search with the full recipe of
            `kcnn train` (`TrainConfig()`: augmentation, cosine schedule,
            `finish_epochs` epochs) and scored on validation and test: the cheapest
            of those whose score the validation split cannot tell from the best
            one's (within one standard error of the difference), then the next best,
            the best one always among them. `best/` is the cheapest of them whose
            score (validation accuracy with the cost term) is within one standard
            error of the difference from the top one's (`kcnn.tune.selection`). 0: no
            finish; `best/` is the best trial as it trained.
        finish_epochs: epochs of the finish's runs (`kcnn train`'s 30).
        seeds: trainings of the model chosen for best/ and of each reference with
            the finish's recipe, each from other initial weights, dropout masks,
            batch order and augmentation (the split stays the same), so that the
            verdict states their test accuracy as a mean and spread over seeds and
            whether the chosen model beats each reference beyond that spread
            (`kcnn.tune.verdict`). Seed 0 is the finish's own run, which chooses;
            the others are trained after the choice (`kcnn.tune.finish.repeat`),
            and change nothing of it. 1: the finish's runs alone, no spread.
            Without a finish (`top_k=0`), nothing is repeated.
        folds: on the bundled digits (`data="digits"`) only, K >= 2 also scores the
            chosen model and each reference by stratified K-fold cross-validation
            over its 1,797 images: each trained K times with the finish's recipe,
            fold k's images as the test split, the other folds split for training
            and validation as the finish splits its pool; the verdict states each
            model's test accuracy over the folds and the paired t interval on the
            per-fold differences (`kcnn.tune.folds`). Trained after the choice, they
            change nothing of it. 0 (default): none. Needs a finish (`top_k` >= 1).
        target_macs: the cost term of the score (`kcnn.tune.cost`: the penalty side
            of MnasNet's soft constraint): a trial of more MACs per image than this is scored by its
            objective times (MACs / target_macs) ** -0.07 (a loss: divided by it),
            about 5% per doubling, and ranked, selected for the finish and chosen by
            that score. "references" (default): the MACs of the cheapest of
            `references` that fits the data (LeNet-5's 416,520 on 32x32 digits;
            none without references); None or "none": no cost term, the objective
            alone.
        cost: what the cost term charges: "macs" (default), multiply-accumulates per
            image, counted; or "latency", the median latency of the model's
            inference path measured on this machine (`kcnn.tune.latency`: the
            precision "auto" picks, `latency_batch_size` images per call, measured
            once per configuration and cached in the project's latency.json), in the
            same form: (latency / target_latency_ms) ** -0.07 above the target.
            With "latency", `target_macs` charges nothing, and the finish ranks its
            runs by the same cost (each run's latency measured alike, the
            trials' read from the search's cache).
        target_latency_ms: with `cost="latency"`, the milliseconds per call above
            which the score pays the cost term; None (default): the latency of the
            cheapest of `references` (by MACs) that fits the data, measured alike
            (no cost term without one).
        max_latency_ms: reject configurations slower than this (milliseconds per
            call, measured as for `cost="latency"`): random proposals are drawn
            again, a configuration proposed anyway is a failed trial, as
            `max_macs` does.
        latency_batch_size: images per timed call (1: the latency of one image).
        measure_latency: measure every trial's latency for trials.csv with
            `cost="macs"` too. Measuring costs about a second per configuration
            (tracing, warm-up, 20 timed runs), so it is done only when asked, or
            when the cost, `max_latency_ms` or `pareto_axis` needs it.
        pareto_axis: the Pareto plot's cost axis: "macs" (default), "params" or
            "latency" (which measures every trial's latency).
        references: registered models, comma-separated, trained with the finish's
            recipe on the same data and drawn on the Pareto plot as reference points
            ("lenet5,convnet"); None or "none": no references. A net that does not
            fit the data is skipped with a warning.
        time_budget: the search's wall-clock budget in seconds (or a duration,
            "5m", "1h30m"; `kcnn.tune.budget`); None: none. No new trial starts
            once the time used plus a typical trial's (the median duration of the
            trials so far) would pass it, and the trial running when it is spent
            stops at the end of that epoch, recorded with the epochs it did (its
            score over those). It covers the search (and the bar); the finish is
            not counted in and reports its own duration
            (`SearchResult.finish_seconds`). A resumed search goes on with the
            time its earlier runs used (kept in the project's oracle.json); a
            distributed search has no budget.
        prune: "median" (default): stop a trial at the end of an epoch when its
            best objective so far is below the median of the completed trials' at
            that epoch (the median stopping rule of Golovin et al. 2017, Google
            Vizier; `kcnn.tune.stopping`), once 3 trials completed it; the trial
            is PRUNED (not failed), listed in trials.csv and never chosen nor on
            the Pareto front. In Hyperband only the trials of a bracket's last
            round are judged, its earlier rounds being its own halving. On the
            default digits search it saved 29% to 32% of the trained
            trial-epochs by CPU (44 or 42 of 62), and the finish retrained the
            same three trials and chose the same network (docs/tune_digits.md).
            "none": every trial trains to its end.
        max_consecutive_failed_trials: stop the search after this many failed trials
            in a row (it then ends as if done); None never stops. Failed trials cost
            little: a configuration that does not fit is never trained.
        chief: "HOST:PORT" of the chief of a distributed search; every process of
            the search passes it. Without `worker`, this process is the chief: it
            serves the tuner's proposals and, at the end, writes the results.
        worker: this worker's tuner id (unique per worker, not containing "chief").
        train: how each trial trains (`kcnn.train.TrainConfig`, default
            `search_train_config()`); its `epochs`, `early_stopping` and `monitor`
            are the search's to set, and its learning rate is the `learning_rate`
            hyperparameter's.
    """

    tuner: str = _field("hyperband", "search algorithm", choices=TUNERS)
    max_trials: int | None = _field(None, "most trials (default: the tuner's own budget; 10 for random/bayesian)")
    max_epochs: int = _field(5, "epochs of a trial (Hyperband: of its longest)")
    objective: str = _field("val_accuracy", "logged quantity to optimize")
    seed: int | None = _field(1337, "seed of the tuner's proposals")
    executions_per_trial: int = _field(1, "trainings averaged per trial")
    early_stopping: int = _field(0, "patience of a trial in epochs (0: off)")
    hyperband_factor: int = _field(3, "Hyperband's reduction factor")
    hyperband_iterations: int = _field(2, "Hyperband's sweeps over its brackets")
    max_params: int | None = _field(None, "reject models with more parameters")
    max_macs: int | None = _field(None, "reject models with more multiply-accumulates per image")
    project: str | None = _field(None, "project name (default: <space>-<dataset>)")
    directory: str | None = _field(None, "project folder (default: saved_models/tuning/<project>)")
    overwrite: bool = _field(False, "start afresh instead of resuming the project")
    retrain: bool = _field(False, "with --top-k 0: retrain the best configuration instead of restoring it")
    top_k: int = _field(3, "top trials retrained with the full `kcnn train` recipe and tested (0: none)")
    finish_epochs: int = _field(30, "epochs of the retraining of the top trials and the references")
    seeds: int = _field(
        3, "trainings of the chosen model and of each reference from other seeds: the verdict's mean and spread (1: one)"
    )
    folds: int = _field(
        0,
        "on --data digits: stratified K-fold test scores of the chosen model and each reference, K >= 2 (0: none)",
        metavar="K",
    )
    references: str | None = _field("lenet5,convnet", "registered models trained the same way as reference points")
    target_macs: int | str | None = _field(
        "references", "MACs above which the score pays the cost term (MnasNet's beta): N, 'references' (the cheapest) or none"
    )
    cost: str = _field("macs", "what the cost term and budget charge: MACs per image, or latency measured here", choices=COSTS)
    target_latency_ms: float | None = _field(
        None, "with --cost latency: milliseconds per call above which the score pays the cost term (default: the "
        "cheapest reference's, measured)"
    )
    max_latency_ms: float | None = _field(None, "reject models slower than this, in milliseconds per call (measured)")
    latency_batch_size: int = _field(1, "images per timed call of the latency measurements")
    measure_latency: bool = _field(False, "measure every trial's latency for trials.csv with --cost macs too")
    pareto_axis: str = _field("macs", "cost axis of the Pareto plot", choices=PARETO_AXES)
    time_budget: float | str | None = _field(
        None,
        "wall-clock budget of the search, e.g. 300, 90s, 5m, 1h30m: no trial starts that a typical one would "
        "take past it, the running one stops at its epoch's end; the finish (retraining) is not counted in and "
        "reports its own duration (default: none)",
        parse=parse_duration,
        metavar="DURATION",
    )
    prune: str = _field("median", "stop hopeless trials early: the median stopping rule (Golovin et al. 2017; it saved 29-32%% of "
        "the trained epochs of the default digits search, for the same chosen net), or none", choices=PRUNERS)
    max_consecutive_failed_trials: int | None = _field(20, "stop after this many failed trials in a row (none: never)")
    chief: str | None = _field(None, "HOST:PORT of the chief of a distributed search")
    worker: str | None = _field(None, "this worker's id in a distributed search")
    train: TrainConfig = _field(None, "training settings", factory=search_train_config)  # noqa: RUF009 - a field with metadata

    def __post_init__(self):
        if self.tuner not in TUNERS:
            raise ValueError(f"`tuner` must be one of {', '.join(map(repr, TUNERS))}. Received: tuner={self.tuner!r}")
        _check_int("top_k", self.top_k, minimum=0)
        object.__setattr__(self, "time_budget", parse_duration(self.time_budget, "time_budget"))
        if self.prune not in PRUNERS:
            raise ValueError(f"`prune` must be one of {', '.join(map(repr, PRUNERS))}. Received: prune={self.prune!r}")
        if self.references is not None and not isinstance(self.references, str):
            raise ValueError(
                f"`references` must be model names, comma-separated, or None. Received: references={self.references!r}"
            )
        if isinstance(self.target_macs, str) and self.target_macs.lower() == "none":
            object.__setattr__(self, "target_macs", None)
        if self.target_macs not in ("references", None) and (
            isinstance(self.target_macs, bool) or not isinstance(self.target_macs, int) or self.target_macs < 1
        ):
            raise ValueError(
                f"`target_macs` must be an int >= 1, 'references' or None. Received: target_macs={self.target_macs!r}"
            )
        self._check_latency()
        for name in ("max_epochs", "executions_per_trial", "hyperband_iterations", "finish_epochs", "seeds"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("hyperband_factor", self.hyperband_factor, minimum=2)
        self._check_folds()
        _check_int("early_stopping", self.early_stopping, minimum=0)
        for name in ("max_trials", "max_params", "max_macs", "max_consecutive_failed_trials"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        if self.seed is not None:
            # keras-tuner takes a seed of 0 for "none" and picks a random one.
            _check_int("seed", self.seed, minimum=1)
        if not isinstance(self.objective, str) or not self.objective:
            raise ValueError(
                "`objective` must be a logged metric name such as 'val_accuracy'. "
                f"Received: objective={self.objective!r}"
            )
        from kcnn.tune._keras_tuner import objective  # keras-tuner infers the direction

        objective(self.objective)
        for name in ("overwrite", "retrain"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False. Received: {name}={getattr(self, name)!r}")
        if self.project is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(self.project)):
            raise ValueError(
                f"`project` must be a folder name of letters, digits, '_', '-', '.' (a folder path goes to "
                f"`directory`, --directory). Received: project={self.project!r}"
            )
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"`train` must be a kcnn.train.TrainConfig. Received: train={self.train!r}")
        if self.directory is not None:
            if not isinstance(self.directory, (str, os.PathLike)):
                raise ValueError(f"`directory` must be a path. Received: directory={self.directory!r}")
            object.__setattr__(self, "directory", os.fspath(self.directory))  # Paths as str: the config is data.
        if self.chief is not None:
            parse_address(self.chief)
            if self.time_budget is not None:
                raise ValueError(
                    "A time budget is for a search in one process; a distributed search has none. "
                    f"Received: time_budget={self.time_budget!r}, chief={self.chief!r}"
                )
        if self.worker is not None:
            if self.chief is None:
                raise ValueError(
                    "A worker needs the chief's address: pass `chief` too. "
                    f"Received: worker={self.worker!r}, chief=None"
                )
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", str(self.worker)) or "chief" in self.worker:
                raise ValueError(
                    "`worker` must be an id of letters, digits, '_' and '-' that does not contain 'chief' "
                    f"(keras-tuner's mark of the chief). Received: worker={self.worker!r}"
                )

    def _check_folds(self):
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 0 or self.folds == 1:
            raise ValueError(f"`folds` must be 0 (none) or an int >= 2. Received: folds={self.folds!r}")
        if self.folds and not self.top_k:
            raise ValueError(
                "k-fold scores are of the finish's recipe: pass top_k >= 1 with folds. "
                f"Received: folds={self.folds!r}, top_k={self.top_k!r}"
            )

    def _check_latency(self):
        if self.cost not in COSTS:
            raise ValueError(f"`cost` must be one of {', '.join(map(repr, COSTS))}. Received: cost={self.cost!r}")
        if self.pareto_axis not in PARETO_AXES:
            raise ValueError(
                f"`pareto_axis` must be one of {', '.join(map(repr, PARETO_AXES))}. Received: pareto_axis={self.pareto_axis!r}"
            )
        for name in ("target_latency_ms", "max_latency_ms"):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().lower() == "none":
                object.__setattr__(self, name, None)
            elif value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                    raise ValueError(f"`{name}` must be a number > 0. Received: {name}={value!r}")
                object.__setattr__(self, name, float(value))
        if self.target_latency_ms is not None and self.cost != "latency":
            raise ValueError(
                "`target_latency_ms` is the target of the latency cost term: pass cost='latency' too. "
                f"Received: target_latency_ms={self.target_latency_ms!r}, cost={self.cost!r}"
            )
        _check_int("latency_batch_size", self.latency_batch_size, minimum=1)
        if not isinstance(self.measure_latency, bool):
            raise ValueError(f"`measure_latency` must be True or False. Received: measure_latency={self.measure_latency!r}")

    @property
    def measures_latency(self) -> bool:
        """Whether the search measures each trial's latency: its cost, its budget or its
        plot needs it, or `measure_latency` asks."""
        return self.measure_latency or self.cost == "latency" or self.max_latency_ms is not None or self.pareto_axis == "latency"

    @property
    def cost_target(self) -> float | None:
        """The target of the cost term in the unit of `cost`: `target_macs` (once
        resolved) with "macs", `target_latency_ms` with "latency"."""
        return self.target_macs if self.cost == "macs" else self.target_latency_ms

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return dataclasses.asdict(self)


def parse_address(address) -> tuple[str, int]:
    """("host", port) from "HOST:PORT"."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"`chief` must be HOST:PORT, e.g. 127.0.0.1:8000. Received: chief={address!r}")
    return host, int(port)


def _check_int(name, value, *, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
