"""The plain ConvNet search space (`kcnn.convnet`)."""

from kcnn.models.convnet import convnet
from kcnn.tune.spaces.base import SearchSpace

__all__ = ["ConvNetSpace"]


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
    8 to 32 filters and kernels up to 7x7, 1 in 70 did). Wider ones are a `--ranges` away.
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
