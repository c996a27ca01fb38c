"""kcnn: the classic convolutional networks as exact Keras 3 builders.

    from kcnn import resnet50, create_model, list_models
    model = resnet50(classes=10, input_shape=(32, 32, 3))

The public names load on first use (PEP 562), so `import kcnn` and the `kcnn`
command start without importing TensorFlow until a model is needed.

kcnn's custom layers (`kcnn.layers`) are registered with Keras as soon as Keras is
imported in a process that imported kcnn, so `keras.models.load_model` reads a saved
kcnn model after `import kcnn`, in either import order.
"""

import contextlib
import importlib.abc
import importlib.util
import sys
import warnings

from kcnn._lazy import lazy_exports
from kcnn._log import install as _install_logger

__version__ = "0.1.0"

# kcnn's own logger shows its progress (INFO) until the program configures logging (kcnn._log).
_install_logger()

_BUILDERS = (
    "alexnet", "convnet", "googlenet", "lenet5", "mlp", "resnet", "resnet18", "resnet34",
    "resnet50", "resnet101", "resnet152", "vgg", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn",
    "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
)
_REGISTRY = ("MODELS", "create_model", "get_spec", "list_models", "min_input_size", "model_info")
# Dense prediction (kcnn.dense): backbone pyramids and segmentation models.
_DENSE = (
    "backbone",
    "fcn",
    "fcn8s",
    "fcn16s",
    "fcn32s",
    "unet",
)

_SUBMODULES = (
    "blocks", "data", "dense", "explain", "export", "layers", "models", "registry", "serving", "shapes", "train", "tune",
    "visualize", "weights",
)

__all__ = [*_BUILDERS, *_REGISTRY, *_DENSE]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(_BUILDERS, "kcnn.models"),
        **dict.fromkeys(_REGISTRY, "kcnn.registry"),
        **dict.fromkeys(_DENSE, "kcnn.dense"),
    },
    _SUBMODULES,
)


class _RegisterLayersWithKeras(importlib.abc.MetaPathFinder):
    """Imports `kcnn.layers` (whose import registers its layers with Keras) right after
    Keras itself is imported, then steps aside.

    Keras finds a custom class of a saved model only among registered objects, and
    importing Keras (and TensorFlow) in `import kcnn` would cost seconds the command
    line does not need; this hook gives both.

    The finder stays in place until Keras is actually executed: a mere lookup
    (`importlib.util.find_spec("keras")`, which TensorFlow makes a dozen times while it
    imports, before it imports Keras) must not use it up.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenImportLayers(spec.loader, self)
                return spec
        return None


class _ThenImportLayers(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader = loader
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self.finder)
        self.loader.exec_module(module)
        try:
            importlib.import_module("kcnn.layers")
        except Exception as error:
            warnings.warn(f"kcnn could not register its layers with Keras: {error!r}", stacklevel=2)

    def __getattr__(self, name):
        return getattr(self.loader, name)


if "keras" in sys.modules:
    importlib.import_module("kcnn.layers")
elif not any(isinstance(finder, _RegisterLayersWithKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterLayersWithKeras())
