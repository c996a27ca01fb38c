"""The inception search space (`kcnn.googlenet` with stages of inception modules)."""

from kcnn.models.googlenet import googlenet
from kcnn.tune.spaces.base import SearchSpace

__all__ = ["InceptionSpace"]


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
