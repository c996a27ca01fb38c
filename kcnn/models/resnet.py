"""ResNet: stacks of basic or bottleneck residual blocks.

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016 (arXiv 2015), table 1.
"""

from keras import layers

from kcnn import blocks
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_choice, check_depth, check_positive_int, check_positive_ints

_BLOCKS = {"basic": blocks.basic_block, "bottleneck": blocks.bottleneck_block}
_STEMS = ("imagenet", "small")


def _stem(x, width, stem, options):
    if stem == "imagenet":
        # 224x224 -> 112x112 -> 56x56
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = blocks.conv_bn_act(x, width, 7, 2, "valid", name="conv1", **options)
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    # For 32x32 images (CIFAR): one 3x3/1 convolution and no pooling, as in the
    # paper's section 4.2, so the first stage still sees 32x32.
    return blocks.conv_bn_act(x, width, 3, 1, "same", name="conv1", **options)


@builder(default_input_shape=(224, 224, 3))
def resnet(
    stages=(2, 2, 2, 2),
    block="basic",
    *,
    width=64,
    variant="v1",
    stem="imagenet",
):
    """A ResNet of any depth.

    Stage `i` (named `conv{i + 2}`) has `stages[i]` blocks of width `width * 2**i`;
    stages after the first halve the spatial size in their first block. Layer names are
    keras.applications' (`conv3_block2_2_conv`, `conv5_block3_out`, `avg_pool`,
    `predictions`), so its weights load by name.

    Args:
        stages: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        block: "basic" (two 3x3) or "bottleneck" (1x1-3x3-1x1, 4x expansion).
        width: channels of the stem and of the first stage's 3x3 convolutions.
        variant: "v1" (paper and keras.applications: conv biases, BN epsilon 1.001e-5,
            bottleneck stride on the 1x1) or "v1.5" (torchvision: no conv bias,
            epsilon 1e-5, stride on the 3x3).
        stem: "imagenet" (7x7/2 convolution and 3x3/2 max pool) or "small"
            (one 3x3/1 convolution, for 32x32 images).
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: the builder contract (see `kcnn`).

    Returns:
        A functional `keras.Model`.
    """
    check_choice("block", block, tuple(_BLOCKS))
    check_choice("variant", variant, ("v1", "v1.5"))
    check_choice("stem", stem, _STEMS)
    width = check_positive_int("width", width)
    stages = check_positive_ints("stages", stages)
    check_depth(sum(stages), "blocks", stages=stages)
    block_fn = _BLOCKS[block]
    options = blocks.residual_conv_options(variant)

    def trunk(x):
        x = _stem(x, width, stem, options)
        for stage, num_blocks in enumerate(stages):
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                x = block_fn(
                    x,
                    width * 2**stage,
                    strides=strides,
                    variant=variant,
                    name=f"conv{stage + 2}_block{index + 1}",
                )
        return x

    def top(x, classes, classifier_activation):
        return blocks.classifier_head(
            x, classes, pooling="avg", classifier_activation=classifier_activation
        )

    return Network(trunk, top)


SPECS = spec_table(
    family="resnet",
    builder=resnet,
    year=2015,
    paper="He et al., Deep Residual Learning for Image Recognition",
    default_input_shape=(224, 224, 3),
    rows={
        "resnet18": dict(stages=(2, 2, 2, 2), block="basic"),
        "resnet34": dict(stages=(3, 4, 6, 3), block="basic"),
        "resnet50": dict(stages=(3, 4, 6, 3), block="bottleneck"),
        "resnet101": dict(stages=(3, 4, 23, 3), block="bottleneck"),
        "resnet152": dict(stages=(3, 8, 36, 3), block="bottleneck"),
    },
)

resnet18 = SPECS["resnet18"].function()
resnet34 = SPECS["resnet34"].function()
resnet50 = SPECS["resnet50"].function()
resnet101 = SPECS["resnet101"].function()
resnet152 = SPECS["resnet152"].function()
