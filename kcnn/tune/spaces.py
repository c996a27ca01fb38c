"""Search spaces: keras-tuner `HyperModel`s that call the kcnn builders.

A space turns a `keras_tuner.HyperParameters` into the keyword arguments of one
builder (`kcnn.convnet`, `kcnn.resnet`, an inception network) and calls it; no layer
is written here. Hyperparameters are named after the builder arguments they set, with
a `_<stage>` suffix (numbered from 1, as the layer names `block1_*`, `conv2_*` are)
for per-stage values, so `kernel_size_2` is `kernel_size[1]` of the builder and the
kernel of `block2_conv*`.

A configuration is checked by the builder itself, which refuses an input too small
for its layers with the smallest size that works (no space restates a builder's
geometry); once built, the model's parameters and multiply-accumulates are checked
against the optional budget. Random proposals (random search, Hyperband, Bayesian
optimization's initial points) are checked this way before they become trials
(`SearchSpace.fits`, a build without training): a configuration that does not fit is
drawn again, so no trial is spent on it. A configuration proposed anyway (a grid
point, Bayesian optimization's model, a space where nothing fits) fails in `build`
with `keras_tuner.errors.FailedTrialError`, which keras-tuner records as a failed
trial (with the message as its reason) before it goes on with the next one.
"""

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
from kcnn.models.convnet import convnet
from kcnn.models.googlenet import googlenet
from kcnn.models.resnet import resnet
from kcnn.train.compile import compile_model
from kcnn.train.config import TrainConfig
from kcnn.train.distribute import prepare_model, resolve_device
from kcnn.tune.config import search_train_config
from kcnn.tune.finish import seeded

__all__ = [
    "SPACES",
    "ConvNetSpace",
    "InceptionSpace",
    "ResNetSpace",
    "SearchSpace",
    "get_space",
    "search_train_config",
]


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

    def fits(self, hp: keras_tuner.HyperParameters) -> bool:
        """Whether the configuration of `hp`'s values builds for the input and is within
        the budget: its model is built (not compiled or trained) and counted. Python's
        `random`, from which Keras draws its default seeds, is left as it was."""
        try:
            with seeded(self.train.seed, "fits"):
                model = self.build_model(self.declare(hp))
            self.check_budget(int(model.count_params()), int(shapes.count_macs(model)))
        except (ValueError, FailedTrialError):
            return False
        return True

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
            # same seed: a search is repeatable, and the finish retrains what was searched.
            with seeded(self.train.seed, sorted((k, v) for k, v in hp.values.items() if not k.startswith("tuner/"))):
                model = self.build_model(arguments)
        except ValueError as error:
            # The builder's own checks are the one word on what is buildable.
            raise FailedTrialError(_first_line(error)) from error
        params = int(model.count_params())
        macs = int(shapes.count_macs(model))
        self.last_build.update(params=params, macs=macs)
        self.check_budget(params, macs)
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
        continues a trial from its earlier round with a fresh optimizer).
        """
        from kcnn.train.callbacks import NonFiniteLossError, TerminateOnNonFinite

        x = args[0] if args else kwargs.pop("x")
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


class ConvNetSpace(SearchSpace):
    """The plain ConvNet (`kcnn.convnet`): depth, per-stage kernel size, stride and
    pooling, width, BatchNorm, dropouts, hidden width and learning rate.

    Hyperparameters: `depth` (the number of stages, `len(filters)`), `filters` (the
    base width: a stage's width is `filters * 2**k` after k halvings of the map by
    strides or pools, k at most 3, as VGG doubles its width after each pool),
    `kernel_size_<i>`, `strides_<i>`, `pool_<i>` (per stage), `convs_per_stage`,
    `batch_norm`, `stage_dropout` (after each stage), `hidden_units` (one hidden
    layer `fc1` of that width), `dropout` (the classifier's, after `fc1`) and
    `learning_rate` (of the `TrainConfig`).

    The default widths start at LeNet-5's scale (LeCun et al. 1998: 6 and 16 feature
    maps, 5x5 kernels, 120 and 84 hidden units), so that the space holds networks as
    cheap as the hand-designed one as well as ones 100x costlier: about a quarter of
    its configurations cost at most twice LeNet-5's 0.42 M MACs on 32x32 images (with
    8 to 32 filters and kernels up to 7x7, 1 in 70 did). Wider ones are a `--range` away.
    """

    name = "convnet"
    builder_name = "kcnn.convnet"
    MAX_DOUBLINGS = 3
    RANGES = {
        "depth": (2, 3, 4),
        "filters": (4, 8, 16),
        "kernel_size": (3, 5),
        "strides": (1, 2),
        "pool": (True, False),
        "convs_per_stage": (1, 2),
        "batch_norm": (False, True),
        "stage_dropout": (0.0, 0.1),
        "hidden_units": (32, 64, 128),
        "dropout": (0.5,),
        "learning_rate": (1e-3, 3e-3),
        "padding": ("same",),
    }
    DEFAULTS = {
        "depth": 3,
        "filters": 16,
        "kernel_size": 3,
        "strides": 1,
        "pool": True,
        "convs_per_stage": 2,
        "batch_norm": False,
        "stage_dropout": 0.0,
        "hidden_units": 128,
        "dropout": 0.5,
        "learning_rate": 3e-3,
        "padding": "same",
    }

    def builder_arguments(self, hp):
        depth = self._declare(hp, "depth")
        width = self._declare(hp, "filters")
        strides = self._per_stage(hp, "strides", depth)
        pool = self._per_stage(hp, "pool", depth)
        # The width doubles with each halving of the map (a stride-2 first convolution,
        # a pool after the previous stage), at most to 8x, so a stage costs about as
        # much as the one before it, whichever of them downsample.
        filters, halvings = [], 0
        for stage in range(depth):
            halvings += strides[stage] == 2
            filters.append(width * 2 ** min(halvings, self.MAX_DOUBLINGS))
            halvings += bool(pool[stage])
        return dict(
            filters=tuple(filters),
            kernel_size=self._per_stage(hp, "kernel_size", depth),
            strides=strides,
            pool=pool,
            convs_per_stage=self._declare(hp, "convs_per_stage"),
            padding=self._declare(hp, "padding"),
            batch_norm=self._declare(hp, "batch_norm"),
            stage_dropout=self._declare(hp, "stage_dropout"),
            hidden_units=(self._declare(hp, "hidden_units"),),
            dropout=self._declare(hp, "dropout"),
        )

    def build_model(self, arguments, **contract):
        return convnet(**arguments, input_shape=self.input_shape, classes=self.classes, **contract)


class ResNetSpace(SearchSpace):
    """ResNet (`kcnn.resnet`): block type, blocks per stage, base width, stem and
    learning rate.

    Hyperparameters: `block` ("basic" or "bottleneck"), `depth` (number of stages,
    `len(stages)`), `stages_<i>` (blocks in stage i, `stages[i-1]`), `width`, `stem`
    ("small": one 3x3/1 convolution for small images; "imagenet": 7x7/2 and a 3x3/2
    max pool), `variant` and `learning_rate`.
    """

    name = "resnet"
    builder_name = "kcnn.resnet"
    RANGES = {
        "block": ("basic", "bottleneck"),
        "depth": (2, 3, 4),
        "stages": (1, 2, 3),
        "width": (16, 32, 64),
        "stem": ("small", "imagenet"),
        "variant": ("v1",),
        "learning_rate": (1e-3, 3e-3),
    }
    DEFAULTS = {
        "block": "basic",
        "depth": 3,
        "stages": 1,
        "width": 16,
        "stem": "small",
        "variant": "v1",
        "learning_rate": 3e-3,
    }

    def builder_arguments(self, hp):
        depth = self._declare(hp, "depth")
        return dict(
            stages=self._per_stage(hp, "stages", depth),
            block=self._declare(hp, "block"),
            width=self._declare(hp, "width"),
            stem=self._declare(hp, "stem"),
            variant=self._declare(hp, "variant"),
        )

    def build_model(self, arguments, **contract):
        return resnet(**arguments, input_shape=self.input_shape, classes=self.classes, **contract)


class InceptionSpace(SearchSpace):
    """An inception network: a small stem, stages of inception modules
    (`kcnn.blocks.inception_block`) with a 3x3/2 max pool between stages, global
    average pooling and a classifier.

    Hyperparameters: `depth` (stages), `modules_<i>` (inception modules in stage i),
    the branch widths of GoogLeNet's table columns `1x1`, `3x3`, `5x5`, `pool_proj`
    (the `3x3_reduce` and `5x5_reduce` widths are half the 3x3 and 5x5 widths; every
    width doubles from one stage to the next), `stem_width`, `batch_norm`, `dropout`
    and `learning_rate`.
    """

    name = "inception"
    builder_name = "kcnn.googlenet"
    RANGES = {
        "depth": (2, 3),
        "modules": (1, 2),
        "1x1": (16, 32, 64),
        "3x3": (32, 64, 128),
        "5x5": (8, 16, 32),
        "pool_proj": (16, 32),
        "stem_width": (32, 64),
        "batch_norm": (False, True),
        "dropout": (0.0, 0.4),
        "learning_rate": (1e-3, 3e-3),
    }
    DEFAULTS = {
        "depth": 2,
        "modules": 1,
        "1x1": 32,
        "3x3": 64,
        "5x5": 16,
        "pool_proj": 16,
        "stem_width": 32,
        "batch_norm": False,
        "dropout": 0.4,
        "learning_rate": 3e-3,
    }

    def builder_arguments(self, hp):
        depth = self._declare(hp, "depth")
        modules = self._per_stage(hp, "modules", depth)
        n1x1, n3x3, n5x5 = (self._declare(hp, name) for name in ("1x1", "3x3", "5x5"))
        pool_proj = self._declare(hp, "pool_proj")
        stages = []
        for stage, count in enumerate(modules):
            scale = 2**stage
            widths = tuple(
                scale * width for width in (n1x1, max(n3x3 // 2, 1), n3x3, max(n5x5 // 2, 1), n5x5, pool_proj)
            )
            stages.append((widths,) * count)
        return dict(
            stages=tuple(stages),
            stem="small",
            stem_width=self._declare(hp, "stem_width"),
            batch_norm=self._declare(hp, "batch_norm"),
            dropout=self._declare(hp, "dropout"),
        )

    def build_model(self, arguments, **contract):
        return googlenet(
            **arguments, input_shape=self.input_shape, classes=self.classes, name="inception", **contract
        )


SPACES: Mapping[str, type[SearchSpace]] = {space.name: space for space in (ConvNetSpace, ResNetSpace, InceptionSpace)}


def get_space(name, input_shape=(32, 32, 3), classes=10, **kwargs) -> SearchSpace:
    """The search space called `name` ("convnet", "resnet" or "inception").

    Args:
        name: the space's name.
        input_shape, classes, **kwargs: the space's arguments (see `SearchSpace`).
    """
    if name not in SPACES:
        raise ValueError(f"Unknown search space. Known: {', '.join(SPACES)}. Received: space={name!r}")
    return SPACES[name](input_shape, classes, **kwargs)


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
