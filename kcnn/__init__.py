"""kcnn: the classic convolutional networks as exact Keras 3 builders.

    from kcnn import resnet50, create_model, list_models
    model = resnet50(classes=10, input_shape=(32, 32, 3))

The public names load on first use (PEP 562), so `import kcnn` and the `kcnn`
command start without importing TensorFlow until a model is needed.
"""

import importlib

__version__ = "0.1.0"

_BUILDERS = (
    "alexnet", "convnet", "googlenet", "lenet5", "mlp", "resnet", "resnet18", "resnet34",
    "resnet50", "resnet101", "resnet152", "vgg", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn",
    "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
)
_REGISTRY = ("MODELS", "create_model", "get_spec", "list_models", "min_input_size", "model_info")

__all__ = [*_BUILDERS, *_REGISTRY]


def __getattr__(name):
    if name in _BUILDERS:
        return getattr(importlib.import_module("kcnn.models"), name)
    if name in _REGISTRY:
        return getattr(importlib.import_module("kcnn.registry"), name)
    raise AttributeError(f"module 'kcnn' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
