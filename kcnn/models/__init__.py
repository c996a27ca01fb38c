"""The model families: each module is a spec table plus one builder. `MAX_PARAMS` and
`MAX_INPUT_SIZE` bound what a builder lays out (see `_checks`)."""

from kcnn.models._checks import MAX_INPUT_SIZE as MAX_INPUT_SIZE  # the bounds: kcnn.models.MAX_PARAMS, ...
from kcnn.models._checks import MAX_PARAMS as MAX_PARAMS
from kcnn.models.alexnet import alexnet
from kcnn.models.convnet import convnet
from kcnn.models.googlenet import googlenet
from kcnn.models.lenet import lenet5
from kcnn.models.mlp import mlp
from kcnn.models.resnet import resnet, resnet18, resnet34, resnet50, resnet101, resnet152
from kcnn.models.vgg import vgg, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = [
    "alexnet",
    "convnet",
    "googlenet",
    "lenet5",
    "mlp",
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]
