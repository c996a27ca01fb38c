"""The read-only name -> model mapping, generated from the families' spec tables."""

import contextlib
import fnmatch
import importlib
import math
from types import MappingProxyType

from kcnn import catalog

__all__ = ["MODELS", "create_model", "get_spec", "list_models", "min_input_size", "model_info"]

# The family modules, in the order of the lectures, then the dense-prediction models
# built on them. (Imported by path: the package kcnn.models exports builders of the
# same names as some of its modules.)
_FAMILIES = tuple(
    importlib.import_module(module)
    for module in (
        *(f"kcnn.models.{family}" for family in ("mlp", "convnet", "lenet", "alexnet", "vgg", "googlenet", "resnet")),
        "kcnn.dense.fcn_vgg",
        "kcnn.dense.unet_decoder",
    )
)

MODELS = MappingProxyType({name: spec for family in _FAMILIES for name, spec in family.SPECS.items()})


def list_models(pattern="*"):
    """Registered model names matching a shell-style `pattern`, sorted.

    >>> list_models("resnet*")
    ['resnet101', 'resnet152', 'resnet18', 'resnet34', 'resnet50']
    """
    return sorted(fnmatch.filter(MODELS, pattern))


def get_spec(name):
    """The `ModelSpec` (builder, arguments, year, paper, task) of a registered model.

    `spec.task` says what the model predicts: "classification" (a class vector per
    image) or "segmentation" (per pixel: (batch, H, W, classes) at the input's size).
    """
    if name not in MODELS:
        raise catalog.unknown_model(name, list(MODELS))
    return MODELS[name]


def create_model(name, /, **kwargs):
    """Builds a registered model by name, e.g. `create_model("vgg16_bn", classes=10)`.

    Keyword arguments go to the family's builder (the builder contract plus the
    family's own options, less those the model fixes: `stages` of `resnet50`), so
    `create_model("resnet18", name="mine")` names the model "mine".

    Raises:
        ValueError: for an unknown model (with the close matches).
        TypeError: for an argument the model fixes or its builder does not take.
    """
    return get_spec(name).build(**kwargs)


def model_info(name, /, **kwargs):
    """Facts about a registered model, computed by building it (a few seconds for the
    largest): name, family, year, paper, input shape, parameters (all and trainable)
    and multiply-accumulates of one forward pass.

    Keyword arguments go to the builder, e.g. `model_info("resnet50", variant="v1.5")`.
    """
    from kcnn import shapes
    from kcnn._keras_graph import unallocated_variables

    spec = get_spec(name)
    # Only shapes are read: the weights are never allocated nor initialized (ResNet-152:
    # 1.4 s instead of 7.4 s), unless a weights file is to be loaded into them.
    laid_out = unallocated_variables() if kwargs.get("weights") is None else contextlib.nullcontext()
    with laid_out:
        model = spec.build(**kwargs)
        # Without a top that flattens (the segmentation models), sizes propagate through the
        # model as built: its smallest input needs no second build.
        fully_convolutional = "include_top" not in spec.signature().parameters
        return {
            "name": name,
            "family": spec.family,
            "year": spec.year,
            "paper": spec.paper,
            "input_shape": tuple(model.input_shape[1:]),
            "params": model.count_params(),
            "trainable_params": sum(math.prod(w.shape) for w in model.trainable_weights),
            "macs": shapes.count_macs(model),
            "min_input_size": shapes.min_input_size(model) if fully_convolutional else min_input_size(name, **kwargs),
        }


def min_input_size(name, /, **kwargs):
    """The smallest square input (in pixels) that the registered model accepts,
    computed from its layers' geometry (`kcnn.shapes.min_input_size`), auxiliary
    heads included: `min_input_size("googlenet", aux_logits=True)` is 65, where the
    main path alone takes 1."""
    return get_spec(name).min_input_size(**kwargs)

