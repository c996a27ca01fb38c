"""ResNet: stacks of basic or bottleneck residual blocks.

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016 (arXiv 2015), table 1.
"""

import numbers

from keras import layers

from kcnn import blocks
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_choice, check_depth, check_positive_int, check_positive_ints

_BLOCKS = {"basic": blocks.basic_block, "bottleneck": blocks.bottleneck_block}
_STEMS = ("imagenet", "small")
# How much each stem shrinks the image: the first stage runs at this stride.
_STEM_STRIDES = {"imagenet": 4, "small": 1}


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
    output_stride=None,
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
        output_stride: None (every stage after the first halves the map: stride 32
            with the imagenet stem), or the stride to stop at, e.g. 16 or 8: the later
            stages keep their input's size and dilate their 3x3 convolutions instead,
            as torchvision's `replace_stride_with_dilation` ([False, False, True] and
            [False, True, True]) and DeepLab's output stride. The weights are the
            same, so pretrained ones load unchanged.
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
    stage_strides = _stage_strides(len(stages), stem, output_stride)
    block_fn = _BLOCKS[block]
    options = blocks.residual_conv_options(variant)

    def trunk(x):
        x = _stem(x, width, stem, options)
        dilation = 1
        for stage, (num_blocks, strides) in enumerate(zip(stages, stage_strides)):
            # A stage that keeps its input's size dilates by the stride it gave up; its
            # first 3x3 (where the stride would be) keeps the previous dilation.
            previous = dilation
            if stage > 0 and strides == 1:
                dilation *= 2
            for index in range(num_blocks):
                x = block_fn(
                    x,
                    width * 2**stage,
                    strides=strides if index == 0 else 1,
                    variant=variant,
                    dilation=dilation,
                    first_dilation=previous if index == 0 else dilation,
                    name=f"conv{stage + 2}_block{index + 1}",
                )
        return x

    def top(x, classes, classifier_activation):
        return blocks.classifier_head(x, classes, pooling="avg", classifier_activation=classifier_activation)

    return Network(trunk, top)


def _stage_strides(num_stages, stem, output_stride):
    """Each stage's stride (2 after the first, 1 once `output_stride` is reached)."""
    natural = [_STEM_STRIDES[stem] * 2**stage for stage in range(num_stages)]
    if output_stride is None:
        return (1,) + (2,) * (num_stages - 1)
    if not isinstance(output_stride, numbers.Integral) or isinstance(output_stride, bool) or output_stride not in natural:
        raise ValueError(
            f"`output_stride` must be None or the stride of one of this ResNet's stages "
            f"({', '.join(map(str, natural))}, with the {stem} stem). Received: output_stride={output_stride!r}"
        )
    return tuple(1 if stage == 0 or natural[stage] > output_stride else 2 for stage in range(num_stages))


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
