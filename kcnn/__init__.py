"""kcnn: the classic convolutional networks as exact Keras 3 builders.

    from kcnn import resnet50, create_model, list_models
    model = resnet50(classes=10, input_shape=(32, 32, 3))
"""

from kcnn.models import *  # noqa: F403  (the builders are the public API)
from kcnn.models import __all__ as _builders
from kcnn.registry import MODELS, create_model, get_spec, list_models, model_info

__version__ = "0.1.0"
__all__ = [*_builders, "MODELS", "create_model", "get_spec", "list_models", "model_info"]
