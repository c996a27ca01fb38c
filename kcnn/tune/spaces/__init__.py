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

The modules, one space each on a shared base:

    base.py       SearchSpace: ranges, budget, fits, the seeded build, the trial's fit
    convnet.py    ConvNetSpace: the plain ConvNet (kcnn.convnet)
    resnet.py     ResNetSpace: ResNet (kcnn.resnet)
    inception.py  InceptionSpace: an inception network (kcnn.googlenet)
"""

from __future__ import annotations

from collections.abc import Mapping

from kcnn.tune.config import search_train_config
from kcnn.tune.spaces.base import SearchSpace
from kcnn.tune.spaces.convnet import ConvNetSpace
from kcnn.tune.spaces.inception import InceptionSpace
from kcnn.tune.spaces.resnet import ResNetSpace

__all__ = [
    "SPACES",
    "ConvNetSpace",
    "InceptionSpace",
    "ResNetSpace",
    "SearchSpace",
    "get_space",
    "search_train_config",
]


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
