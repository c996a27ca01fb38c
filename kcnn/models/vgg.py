"""VGG: stacks of 3x3 convolutions, five max pools, three fully connected layers.

Reference: Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale
Image Recognition", ICLR 2015 (arXiv 2014), table 1 (configurations A, B, D, E).
"""

from kcnn import blocks
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_bool, check_depth, check_fraction, check_positive_int, per_stage
from kcnn.models.convnet import conv_stages

# Convolutions per stage; the widths are always 64, 128, 256, 512, 512.
_WIDTHS = (64, 128, 256, 512, 512)
# torchvision's BatchNorm2d default, which its VGG-BN weights were trained with: ported
# to these layers they agree with torchvision's outputs to 2e-6 (Keras' default 1e-3
# would shift every normalised value).
_BN_EPSILON = 1e-5


@builder(default_input_shape=(224, 224, 3))
def vgg(
    convs_per_stage=(2, 2, 3, 3, 3),
    *,
    batch_norm=False,
    dropout=0.5,
):
    """A VGG network.

    Layer names are keras.applications' (`block3_conv2`, `block3_pool`, `flatten`,
    `fc1`, `fc2`, `predictions`), so its VGG16/VGG19 weights load by name.

    Args:
        convs_per_stage: 3x3 convolutions in each of the five stages, at least one
            ((1, 1, 2, 2, 2) is VGG-11, (2, 2, 3, 3, 3) VGG-16; one int: the same
            in every stage).
        batch_norm: BatchNorm after every convolution (the `_bn` models; convolutions
            keep their biases and BatchNorm has epsilon 1e-5, as torchvision's do).
        dropout: the classifier's dropout, after fc1 and fc2 (the paper's 0.5).
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: the builder contract (see `kcnn`).
    """
    given = convs_per_stage
    convs_per_stage = per_stage("convs_per_stage", convs_per_stage, len(_WIDTHS), check_positive_int)
    check_depth(sum(convs_per_stage), "convolutions", convs_per_stage=given)
    batch_norm = check_bool("batch_norm", batch_norm)
    dropout = check_fraction("dropout", dropout)

    def trunk(x):
        # 224x224x3 -> 7x7x512
        return conv_stages(x, _WIDTHS, convs_per_stage=convs_per_stage, batch_norm=batch_norm, bn_epsilon=_BN_EPSILON)

    def top(x, classes, classifier_activation):
        return blocks.classifier_head(
            x,
            classes,
            pooling="flatten",
            hidden_units=(4096, 4096),
            dropout=dropout,
            classifier_activation=classifier_activation,
        )

    return Network(trunk, top, flattens=True)


_DEPTHS = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}

SPECS = spec_table(
    family="vgg",
    builder=vgg,
    year=2014,
    paper="Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition",
    default_input_shape=(224, 224, 3),
    rows={
        **{name: dict(convs_per_stage=depth) for name, depth in _DEPTHS.items()},
        **{f"{name}_bn": dict(convs_per_stage=depth, batch_norm=True) for name, depth in _DEPTHS.items()},
    },
)

vgg11 = SPECS["vgg11"].function()
vgg13 = SPECS["vgg13"].function()
vgg16 = SPECS["vgg16"].function()
vgg19 = SPECS["vgg19"].function()
vgg11_bn = SPECS["vgg11_bn"].function()
vgg13_bn = SPECS["vgg13_bn"].function()
vgg16_bn = SPECS["vgg16_bn"].function()
vgg19_bn = SPECS["vgg19_bn"].function()
