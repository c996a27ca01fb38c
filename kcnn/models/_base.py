"""What every builder shares: the input, the size check (the checks of the arguments,
weights and input size are `_checks`), the top, weights, and the spec-table rows that
the registry is made of."""

import dataclasses
import functools
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType

import keras

from kcnn import blocks
from kcnn._keras_graph import deferred_variables, unallocated_variables
from kcnn.models._checks import (
    WEIGHTS_EXPECTED,
    ModelTooLarge,
    check_activation,
    check_bool,
    check_keywords,
    check_name,
    check_nonempty,
    check_positive_int,
    check_size,
    check_softmax_classes,
    check_weights_file,
    is_weights_tag,
    resolve_input_shape,
    too_small_error,
    trunk_min_input_size,
)

__all__ = ["TASKS", "ModelSpec", "Network", "build_model", "builder", "spec_table"]

#: What a registered model can predict (`ModelSpec.task`).
TASKS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One row of a family's spec table: a named model is a builder plus arguments."""

    name: str
    family: str
    builder: Callable
    arguments: Mapping
    year: int
    paper: str
    default_input_shape: tuple
    # What the model predicts: "classification" (one class vector per image) or
    # "segmentation" (one per pixel, at the input's height and width). The one place
    # that says it; training, evaluation and export read it here.
    task: str = "classification"

    def signature(self):
        """The named model's signature: the family builder's parameters less the ones
        this row fixes, all keyword-only; `name` defaults to the registry name."""
        parameters = [
            parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=self.name if key == "name" else parameter.default)
            for key, parameter in inspect.signature(self.builder).parameters.items()
            if key not in self.arguments
        ]
        return inspect.Signature(parameters)

    def build(self, **kwargs):
        """Builds the model with keyword arguments of `signature()`.

        Raises:
            TypeError: for an argument the row fixes (e.g. `stages` of `resnet50`) or
                one the builder does not take.
        """
        for key in kwargs:
            if key in self.arguments:
                raise TypeError(
                    f"`{self.name}` fixes `{key}` to {self.arguments[key]!r}; for another value call "
                    f"`kcnn.{self.builder.__name__}({key}=...)`. Received: {key}={kwargs[key]!r}"
                )
        check_keywords(self.name, self.signature().parameters, kwargs, getattr(self.builder, "renamed", {}))
        if kwargs.get("name") is None:
            kwargs["name"] = self.name
        weight_set = None
        weights = kwargs.get("weights")
        # A segmentation model's `weights` are its backbone's: its builder passes them on.
        if self.task == "classification" and is_weights_tag(weights):
            weight_set, kwargs["weights"] = self._pretrained(kwargs)
        elif isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
            from kcnn.weights import store

            identified, _ = store.identify(weights)
            if identified is not None and identified.model == self.name:
                self._take_arguments(identified, kwargs)
        try:
            model = self.builder(**{**self.arguments, **kwargs})
        except ModelTooLarge as error:
            # Name what the caller gave, not this row's own arguments.
            given = {key: value for key, value in error.received.items() if key not in self.arguments}
            if given.get("name") == self.name:
                del given["name"]
            raise ModelTooLarge(error.what, given) from None
        if weight_set is not None:
            from kcnn.weights import transfer

            transfer.remember(model, weight_set)
        return model

    def _take_arguments(self, weight_set, kwargs):
        """The builder arguments the weights need (`WeightSet.variant`) become the
        call's defaults: `kcnn.resnet18(weights="imagenet")` builds the v1.5 network
        torchvision's weights are for. A different value given explicitly is refused."""
        for key, value in weight_set.variant.items():
            given = kwargs.setdefault(key, value)
            if given != value:
                arguments = "".join(f"{k}={v!r}, " for k, v in weight_set.variant.items())
                raise ValueError(
                    f"The weights {weight_set.name} are for {key}={value!r}: build "
                    f"kcnn.{self.name}({arguments}weights={kwargs['weights']!r}), or leave `{key}` out. "
                    f"Received: {key}={given!r}"
                )

    def _pretrained(self, kwargs):
        """The weight set `weights="imagenet..."` picks, with the arguments it needs
        (`_take_arguments`), and its verified local file (downloaded if needed)."""
        from kcnn.weights import store, table

        weight_set = table.resolve(self.name, kwargs["weights"])
        defaults = self.signature().parameters
        self._take_arguments(weight_set, kwargs)
        include_top = kwargs.get("include_top", True)
        classes = kwargs.get("classes", defaults["classes"].default)
        if include_top is True and classes != 1000:
            raise ValueError(
                f"The classifier of {weight_set.name} has 1000 ImageNet classes: keep classes=1000 with "
                "include_top=True, or pass include_top=False for the backbone and add your own head "
                f"(kcnn.train.fine_tune does). Received: classes={classes!r}"
            )
        return weight_set, store.fetch(weight_set, include_top=include_top is not False)

    def function(self):
        """The public builder function for this row, e.g. `kcnn.resnet50`."""

        @functools.wraps(self.builder, assigned=("__module__",))
        def build(*args, **kwargs):
            if args:
                raise TypeError(
                    f"`{self.name}` takes keyword arguments only. "
                    f"Received: {len(args)} positional argument(s) {', '.join(map(repr, args))}"
                )
            return self.build(**kwargs)

        arguments = ", ".join(f"{key}={value!r}" for key, value in self.arguments.items())
        build.__name__ = build.__qualname__ = self.name
        build.__signature__ = self.signature()
        if self.arguments or self.builder.__name__ != self.name:
            build.__doc__ = (
                f"Builds `{self.name}`: `{self.builder.__name__}({arguments})`.\n\n"
                f"Reference: {self.paper} ({self.year}).\n\n"
                f"Takes the keyword arguments of `kcnn.models.{self.builder.__name__}` but "
                f"{', '.join(f'`{key}`' for key in self.arguments) or 'none'} (fixed here); see there."
            )
        else:  # A family of one model (AlexNet, GoogLeNet): the builder's own documentation.
            build.__doc__ = self.builder.__doc__
        return build

    def min_input_size(self, **kwargs):
        """The smallest square input the model accepts, from its trunk's geometry,
        auxiliary heads included (`trunk_min_input_size`); `kwargs` as `build`'s
        (the contract's own, such as `classes`, play no part)."""
        check_keywords(self.name, self.signature().parameters, kwargs, getattr(self.builder, "renamed", {}))
        shape = kwargs.pop("input_shape", None) or self.default_input_shape
        with unallocated_variables():  # Only the layers' geometry is read.
            if self.task != "classification":  # No top to leave out: the whole model, at any size.
                from kcnn import shapes

                kwargs.pop("weights", None)  # The backbone's: no part in the geometry.
                return shapes.min_input_size(self.build(**kwargs, input_shape=(None, None, shape[2])))
            options = {key: value for key, value in kwargs.items() if key not in _CONTRACT}
            network = self.builder.architecture(**{**self.arguments, **options})
            return trunk_min_input_size(network.trunk, shape[2])


def spec_table(*, family, builder, year, paper, default_input_shape, rows, task="classification"):
    """A read-only {name: ModelSpec} table from {name: builder arguments} rows."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {', '.join(map(repr, TASKS))}. Received: task={task!r}")
    return MappingProxyType(
        {
            name: ModelSpec(
                name=name,
                family=family,
                builder=builder,
                arguments=MappingProxyType(dict(arguments)),
                year=year,
                paper=paper,
                default_input_shape=default_input_shape,
                task=task,
            )
            for name, arguments in rows.items()
        }
    )


# The keras.applications keywords every builder adds (`builder`).
_CONTRACT = ("include_top", "weights", "input_tensor", "input_shape", "pooling", "classes", "classifier_activation", "name")


def build_model(
    *,
    name,
    trunk,
    top,
    include_top,
    weights,
    input_tensor,
    input_shape,
    default_input_shape,
    pooling,
    classes,
    classifier_activation,
    flattens=False,
    received=None,
):
    """Assembles a builder's functional model.

    The layers are laid out without memory for their weights (`deferred_variables`),
    and a model of more than `MAX_PARAMS` parameters is refused before any weight is
    allocated.

    Args:
        name: the model's name (the registry name for named models).
        trunk: `trunk(inputs) -> outputs`: the feature extractor; `outputs` is the final
            feature map, or a list whose first item is (auxiliary tensors follow, whose
            spatial sizes count in the input-size check).
        top: `top(features, classes, classifier_activation) -> outputs`: the
            classifier, given what `trunk` returned; returns one output tensor or a
            list.
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation: the builder contract (as keras.applications).
        default_input_shape: the family's default (H, W, C).
        flattens: the top flattens a fixed-size feature map (VGG, AlexNet, LeNet), so
            the input size must be known when `include_top`.
        received: the arguments the caller gave, for the size error's message.
    """
    check_name(name)
    classes = check_positive_int("classes", classes)
    check_activation("classifier_activation", classifier_activation)
    blocks.check_pooling(pooling)
    include_top = check_bool("include_top", include_top)
    if include_top and pooling is not None:
        raise ValueError(
            "`pooling` shapes the features of include_top=False; the classifier pools as its family does "
            "(flatten or average). Pass include_top=False for pooled features, or leave pooling=None. "
            f"Received: pooling={pooling!r}, include_top=True"
        )
    if include_top:
        check_softmax_classes(classes, classifier_activation)
    if weights is not None and not (isinstance(weights, (str, os.PathLike))):
        raise ValueError(f"`weights` must be {WEIGHTS_EXPECTED}. Received: weights={weights!r}")
    if is_weights_tag(weights):
        from kcnn.weights import table

        table.resolve(name, weights)  # the error for a model without weights, or an unknown tag
        raise ValueError(
            f"`weights={weights!r}` names a weight set of a registered model: build it by that model's name, e.g. "
            f"kcnn.resnet50(weights={weights!r}) (`kcnn weights list`). Received: weights={weights!r} for `{name}`"
        )
    if weights is not None:
        weights = check_weights_file(weights)
    shape = resolve_input_shape(
        input_shape,
        input_tensor,
        default_input_shape,
        allow_unknown_size=not (include_top and flattens),
    )
    with deferred_variables():
        try:
            model = _lay_out(name, trunk, top, shape, input_tensor, include_top, pooling, classes, classifier_activation)
        except RecursionError:
            raise ModelTooLarge(
                f"`{name}` is too deep for Keras: it maps a functional model's layers recursively, and this one's "
                f"exceed Python's recursion limit ({sys.getrecursionlimit():,}; sys.setrecursionlimit raises it).",
                received or {},
            ) from None
        check_size(model, received or {})
    if weights is not None:
        from kcnn import weights as weights_module

        weights_module.load_weights(model, weights)
    return model


def _lay_out(name, trunk, top, shape, input_tensor, include_top, pooling, classes, classifier_activation):
    """The functional model of `trunk` and `top` (or the pooled features)."""
    inputs = input_tensor if input_tensor is not None else keras.Input(shape, name="input")
    try:
        features = trunk(inputs)
        check_nonempty(name, features)
    except ValueError as error:
        too_small = too_small_error(name, trunk, shape, error)
        if too_small is None:
            raise
        raise too_small from None
    if include_top:
        outputs = top(features, classes, classifier_activation)
    else:
        feature_map = features[0] if isinstance(features, (list, tuple)) else features
        outputs = blocks.global_pool(feature_map, pooling)
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    return keras.Model(inputs, outputs, name=name)


@dataclasses.dataclass(frozen=True)
class Network:
    """What a family's architecture function returns.

    Attributes:
        trunk: `trunk(inputs) -> features`: the feature extractor; `features` is the
            final feature map, or a list whose first item it is, followed by auxiliary
            tensors whose spatial sizes count in the input-size check (GoogLeNet's
            auxiliary heads).
        top: `top(features, classes, classifier_activation) -> output(s)`: the classifier.
        flattens: the top flattens a fixed-size feature map (VGG, AlexNet, LeNet), so
            the input size must be known when `include_top`.
    """

    trunk: Callable
    top: Callable
    flattens: bool = False


def _is_default(value, default):
    # Compared by type first: a tensor or an array is never a default.
    return value is default or (type(value) is type(default) and value == default)


def builder(*, default_input_shape, classes=1000, renamed=None):
    """Turns an architecture function into a builder with the keras.applications
    contract.

    The architecture function takes the family's own options and returns a `Network`;
    the builder adds the keyword-only contract (`include_top`, `weights`,
    `input_tensor`, `input_shape`, `pooling`, `classes`, `classifier_activation`,
    `name`) and assembles the model with `build_model`, so argument checks, the input,
    the size check, pooling and weights live in one place.

    Args:
        default_input_shape: the family's default (H, W, C).
        classes: the family's default number of classes.
        renamed: {old name: new name} of the family's renamed options: a call with an
            old name fails with a TypeError that names the new one (the builder's
            `renamed` attribute).
    """
    default_classes = classes
    renamed = MappingProxyType(dict(renamed or {}))

    def decorate(architecture):
        own = inspect.signature(architecture)

        @functools.wraps(architecture)
        def build(
            *args,
            include_top=True,
            weights=None,
            input_tensor=None,
            input_shape=None,
            pooling=None,
            classes=default_classes,
            classifier_activation="softmax",
            name=None,
            **options,
        ):
            check_keywords(architecture.__name__, build.__signature__.parameters, options, renamed)
            try:
                own.bind(*args, **options)
            except TypeError as error:
                positional = [key for key, p in own.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
                raise TypeError(
                    f"`{architecture.__name__}` takes at most {len(positional)} positional argument(s) "
                    f"({', '.join(positional) or 'none'}), each given once ({error}). "
                    f"Received: {len(args)} positional argument(s) {', '.join(map(repr, args))}"
                    + (f" and keywords {', '.join(options)}" if options else "")
                ) from None
            network = architecture(*args, **options)
            contract = dict(
                include_top=include_top,
                weights=weights,
                input_tensor=input_tensor,
                input_shape=input_shape,
                pooling=pooling,
                classes=classes,
                classifier_activation=classifier_activation,
                name=name,
            )
            defaults = build.__signature__.parameters
            received = {
                **own.bind(*args, **options).arguments,
                **{key: value for key, value in contract.items() if not _is_default(value, defaults[key].default)},
            }
            return build_model(
                name=architecture.__name__ if name is None else name,
                trunk=network.trunk,
                top=network.top,
                include_top=include_top,
                weights=weights,
                input_tensor=input_tensor,
                input_shape=input_shape,
                default_input_shape=default_input_shape,
                pooling=pooling,
                classes=classes,
                classifier_activation=classifier_activation,
                flattens=network.flattens,
                received=received,
            )

        contract = inspect.signature(build, follow_wrapped=False).parameters
        build.renamed = renamed
        build.architecture = architecture
        build.__signature__ = inspect.Signature(
            [
                *own.parameters.values(),
                *(contract[key] for key in contract if key not in ("args", "options")),
            ]
        )
        return build

    return decorate
