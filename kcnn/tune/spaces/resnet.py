"""The ResNet search space (`kcnn.resnet`)."""

from kcnn.models.resnet import resnet
from kcnn.tune.spaces.base import SearchSpace

__all__ = ["ResNetSpace"]


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
