"""`SearchSpace`, the base of every search space: its ranges, the budget (`check_budget`,
`fits`), the seeded build and the trial's fit, with the helpers they use. A space adds
a builder and its hyperparameters (convnet.py, resnet.py, inception.py); the checks a
configuration goes through are described in the package's docstring."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_tuner
from keras_tuner.errors import FailedTrialError

from kcnn import shapes
from kcnn.models import _base, _checks
from kcnn.train.compile import compile_model
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import prepare_model, resolve_device
from kcnn.tune.config import search_train_config
from kcnn.tune.seeding import seeded

__all__ = ["SearchSpace"]


class SearchSpace(keras_tuner.HyperModel):
    """A builder plus the hyperparameters that choose its arguments.

    Each range is given as a tuple of choices (a single value fixes it, and it is
    still recorded with the trial). Subclasses set `name`, `RANGES` (the default
    choices), `DEFAULTS` (the default configuration) and implement
    `builder_arguments` and `build_model`.

    Args:
        input_shape: (height, width, channels) of the images.
        classes: number of classes.
        max_params: reject configurations with more parameters (None: no limit).
        max_macs: reject configurations with more multiply-accumulates per image.
        train: how trials are compiled and trained (a `kcnn.train.TrainConfig`,
            default `search_train_config()`); the `learning_rate` hyperparameter
            overrides its learning rate.
        **ranges: choices for the space's ranges, by name (see the subclass).
    """

    name = "space"
    builder_name = ""
    RANGES: Mapping[str, tuple] = {}
    DEFAULTS: Mapping[str, Any] = {}

    def __init__(self, input_shape=(32, 32, 3), classes=10, *, max_params=None, max_macs=None, train=None, **ranges):
        super().__init__(name=self.name, tunable=True)
        shape = _base.resolve_input_shape(input_shape, None, None, allow_unknown_size=False)
        _checks.check_positive_int("classes", classes)
        for argument, value in (("max_params", max_params), ("max_macs", max_macs)):
            if value is not None:
                _checks.check_positive_int(argument, value)
        if train is not None and not isinstance(train, TrainConfig):
            raise ValueError(f"`train` must be a kcnn TrainConfig or None. Received: train={train!r}")
        unknown = sorted(set(ranges) - set(self.RANGES))
        if unknown:
            raise ValueError(
                f"Unknown ranges for the {self.name!r} space: {unknown}. Known: {sorted(self.RANGES)}. "
                f"Received: {', '.join(f'{key}={ranges[key]!r}' for key in unknown)}"
            )
        self.input_shape = shape
        self.classes = int(classes)
        self.max_params = max_params
        self.max_macs = max_macs
        self.train = train or search_train_config()
        self.ranges = {key: _choices(key, ranges.get(key, default)) for key, default in self.RANGES.items()}
        # The default configuration: the class's, except where a range is given,
        # whose first choice is then the default.
        self.defaults = {key: self.ranges[key][0] if key in ranges else self.DEFAULTS[key] for key in self.RANGES}
        # Facts of the latest `build` (params, MACs), read by the tuner for its trial
        # records; one tuner runs one trial at a time.
        self.last_build: dict[str, Any] = {}
        # The search's latency measurements (`kcnn.tune.latency.LatencyMeter`) and
        # budget, set by the search when it measures latency; None: not measured.
        self.latency = None
        self.max_latency_ms: float | None = None
        # Which execution of the trial is built (`SearchConfig.executions_per_trial`),
        # numbered from 0 by the tuner: each starts from other initial weights.
        self.execution = 0
        # A space whose default configuration cannot be built would fail keras-tuner
        # (and every user) before the first trial: refuse it here, with the builder's
        # reason. Its trunk is enough (the top adds no size constraint) and cheap.
        try:
            self.build_model(self.default_arguments(), include_top=False)
        except ValueError as error:
            raise ValueError(
                f"The default configuration of the {self.name!r} space does not fit the input: "
                f"{_first_line(error)}"
            ) from None

    # -- what subclasses provide ----------------------------------------------

    def builder_arguments(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares the architecture's hyperparameters in `hp` and returns the
        builder's arguments (without input shape and classes)."""
        raise NotImplementedError

    def build_model(self, arguments: Mapping[str, Any], **contract) -> keras.Model:
        """Calls the builder with `arguments`, the space's input shape and classes, and
        the builder-contract keywords in `contract` (`include_top=False` for the check
        of the default configuration). The builder refuses, with a ValueError, an
        input too small for the configuration."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------

    @property
    def strategy(self):
        """The train config's distribution strategy (the process' own: every trial and
        keras-tuner's scope share it), or None."""
        return resolve_device(self.train).strategy

    def device_for(self, model: keras.Model):
        """What the train config's "auto" device settings resolve to for `model` (on a
        CPU with bfloat16 units the precision follows the model's size, as in
        `kcnn train`)."""
        return resolve_device(self.train, model)

    def trial_config(self, hp: keras_tuner.HyperParameters, epochs: int) -> TrainConfig:
        """The `TrainConfig` of one training run of a trial: `epochs` epochs at the
        sampled learning rate."""
        changes = {"epochs": int(epochs)}
        if "learning_rate" in hp.values:
            changes["learning_rate"] = float(hp.values["learning_rate"])
        return dataclasses.replace(self.train, **changes)

    def check_budget(self, params: int, macs: int) -> None:
        """Raises `FailedTrialError` when the model is over `max_params` or `max_macs`."""
        if self.max_params is not None and params > self.max_params:
            raise FailedTrialError(
                f"The model has {params:,} parameters, over the budget. Received: max_params={self.max_params:,}"
            )
        if self.max_macs is not None and macs > self.max_macs:
            raise FailedTrialError(
                f"The model costs {macs:,} MACs per image, over the budget. Received: max_macs={self.max_macs:,}"
            )

    def check_latency(self, latency_ms: float) -> None:
        """Raises `FailedTrialError` when the model is slower than `max_latency_ms`."""
        if self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            raise FailedTrialError(
                f"The model takes {latency_ms:.3g} ms per call (measured), over the budget. "
                f"Received: max_latency_ms={self.max_latency_ms:g}"
            )

    def configuration(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """What determines a configuration's network, the key of its cached latency:
        the builder and its arguments (not the learning rate, nor Hyperband's epochs)."""
        return {"space": self.name, "builder": self.builder_name, "arguments": dict(arguments), "classes": self.classes}

    def measure(self, model: keras.Model, arguments: Mapping[str, Any]) -> float | None:
        """The latency of `model` in ms (`self.latency`: cached per configuration), put in
        `last_build`, and checked against `max_latency_ms`; None when not measured."""
        if self.latency is None:
            return None
        figure = self.latency.latency(model, self.configuration(arguments))
        self.last_build.update(latency_ms=figure.median_ms, latency_spread_ms=figure.spread_ms)
        self.check_latency(figure.median_ms)
        return figure.median_ms

    def measured_latency(self, hp: keras_tuner.HyperParameters):
        """The `kcnn.tune.latency.Latency` of `hp`'s configuration under the key that
        `measure` gives it, so the search's figure is read from the project's cache,
        not timed again (the finish's, `kcnn.tune.finish.with_latency`); None when
        the search measures no latency. Its model is built, not compiled or trained
        (the timing does not depend on the weights); Python's `random` is left as it
        was."""
        if self.latency is None:
            return None
        with seeded(self.train.seed, "latency"):
            arguments = self.declare(hp.copy())
            model = self.build_model(arguments)
        return self.latency.latency(model, self.configuration(arguments))

    def fits(self, hp: keras_tuner.HyperParameters, *, ceiling: int | None = None) -> bool:
        """Whether the configuration of `hp`'s values builds for the input and is within
        the budget (and at most `ceiling` MACs): its model is built (not compiled or
        trained) and counted. Python's `random`, from which Keras draws its default
        seeds, is left as it was."""
        try:
            with seeded(self.train.seed, "fits"):
                arguments = self.declare(hp)
                model = self.build_model(arguments)
            macs = int(shapes.count_macs(model))
            self.check_budget(int(model.count_params()), macs)
            if self.max_latency_ms is not None:  # Measured (and cached) only for a budget.
                self.measure(model, arguments)
        except (ValueError, FailedTrialError):
            return False
        return ceiling is None or macs <= ceiling

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Builds and compiles the model of one configuration.

        Raises:
            FailedTrialError: for a configuration the builder refuses (an input too
                small for it: the message names the smallest size), or one over the
                budget.
        """
        self.last_build = {}
        arguments = self.declare(hp)
        try:
            # A configuration starts from the same weights whenever it is built with the
            # same seed: a search is repeatable, and the finish retrains what was searched
            # (its first execution's weights; the others' differ, as averaging wants).
            values = sorted((k, v) for k, v in hp.values.items() if not k.startswith("tuner/"))
            with seeded(self.train.seed, values, *(("execution", self.execution) if self.execution > 0 else ())):
                model = self.build_model(arguments)
        except ValueError as error:
            # The builder's own checks are the one word on what is buildable.
            raise FailedTrialError(_first_line(error)) from error
        params = int(model.count_params())
        macs = int(shapes.count_macs(model))
        self.last_build.update(params=params, macs=macs)
        self.check_budget(params, macs)
        self.measure(model, arguments)  # Before training, on the model as built (float32, unfolded).
        device = self.device_for(model)
        model = prepare_model(model, device)
        # Compiled so the space also works with a plain keras-tuner tuner; `fit`
        # compiles again with the learning-rate schedule, once the number of
        # epochs and steps is known.
        constant = dataclasses.replace(self.trial_config(hp, 1), schedule="constant", warmup_epochs=0.0)
        return compile_model(model, constant, device=device)

    def fit(self, hp, model, *args, callbacks=None, epochs=1, initial_epoch=0, **kwargs):
        """Trains a trial's model as `kcnn.train` trains a run.

        The schedule spans the epochs of this call (`epochs - initial_epoch`; Hyperband
        continues a trial from its earlier round with a fresh optimizer). Given a
        `kcnn.data.Dataset` (as `kcnn.tune.search` gives it) rather than a `tf.data`
        split, the trial trains on its training split in new pipelines
        (`Dataset.restarted`): every trial sees the same order and augmentation of its
        epochs, whatever ran before it in the process, so a trial run again when a
        killed search resumes scores what it would have.
        """
        from kcnn.data import Dataset
        from kcnn.train.callbacks import NonFiniteLossError, TerminateOnNonFinite

        x = args[0] if args else kwargs.pop("x")
        if isinstance(x, Dataset):
            x = x.restarted().train
        steps = _steps_per_epoch(x)
        config = self.trial_config(hp, max(int(epochs) - int(initial_epoch), 1))
        compile_model(model, config, steps, device=self.device_for(model))
        callbacks = [*(callbacks or []), TerminateOnNonFinite()]
        kwargs.setdefault("shuffle", False)  # The pipeline shuffles (seeded, every epoch).
        try:
            return model.fit(x, *args[1:], epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, **kwargs)
        except NonFiniteLossError as error:
            # A diverged trial is no score at chance but a failed trial, with the reason.
            raise FailedTrialError(_first_line(error)) from error

    def declare(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares every hyperparameter of the space in `hp` (the architecture's and
        `learning_rate`) and returns the builder arguments of its values."""
        arguments = self.builder_arguments(hp)
        self._declare(hp, "learning_rate")
        return arguments

    def declare_hyperparameters(self, hp):
        # keras-tuner's hook to declare the space up front, without building a model.
        self.declare(hp)

    def default_arguments(self) -> dict[str, Any]:
        """The builder arguments of the default configuration."""
        return self.declare(keras_tuner.HyperParameters())

    # -- helpers for subclasses ------------------------------------------------

    def _declare(self, hp, name, range_name=None):
        """Declares hyperparameter `name` over the range `range_name` (default: `name`)."""
        range_name = range_name or name
        choices = self.ranges[range_name]
        if len(choices) == 1:
            return hp.Fixed(name, choices[0])
        default = self.defaults[range_name]
        if isinstance(default, bool):
            # `Choice` would turn booleans into 0 and 1.
            return hp.Boolean(name, default=default)
        return hp.Choice(name, list(choices), default=default)

    def _per_stage(self, hp, range_name, depth):
        """One hyperparameter per stage, `{range_name}_{stage}`; stages that exist only
        at some depths are conditional on `depth`, so an inactive one is not sampled."""
        depths = self.ranges["depth"]
        values = []
        for stage in range(1, max(depths) + 1):
            name = f"{range_name}_{stage}"
            if stage <= min(depths):
                values.append(self._declare(hp, name, range_name))
                continue
            with hp.conditional_scope("depth", [d for d in depths if d >= stage]):
                value = self._declare(hp, name, range_name)
            if stage <= depth:
                values.append(value)
        return tuple(values)


def _choices(name, value) -> tuple:
    """A range's choices from a value or a sequence of values, checked."""
    if isinstance(value, (str, bool, numbers.Number)):
        value = (value,)
    if not isinstance(value, Sequence) or not value:
        raise ValueError(f"A range must be a value or a non-empty sequence of values. Received: {name}={value!r}")
    choices = tuple(value)
    kinds = {bool if isinstance(v, bool) else str if isinstance(v, str) else numbers.Number for v in choices}
    if len(kinds) != 1 or not all(isinstance(v, (str, bool, numbers.Number)) for v in choices):
        raise ValueError(
            f"A range's choices must be numbers, strings or booleans of one kind. Received: {name}={value!r}"
        )
    if len(set(choices)) != len(choices):
        raise ValueError(f"A range's choices must be distinct. Received: {name}={value!r}")
    return choices


def _steps_per_epoch(dataset) -> int | None:
    try:
        steps = int(dataset.cardinality())
    except (AttributeError, TypeError):
        return None
    return steps if steps > 0 else None


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0]
