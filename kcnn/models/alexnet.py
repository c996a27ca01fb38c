"""AlexNet: the two-GPU network of the 2012 ImageNet competition.

Reference: Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NIPS 2012, section 3 and figure 2. The two GPUs'
halves are `groups=2` convolutions (conv2, conv4, conv5 see only their own GPU's
maps; conv3 and the fully connected layers see both).

`variant="caffe"` is the network the BVLC Caffe weights were trained and published in
(`models/bvlc_alexnet/deploy.prototxt` of BVLC/caffe), as the ONNX Model Zoo's
`bvlcalexnet-12.onnx` runs it: Caffe's local response normalization (k=1, alpha/n)
and its C,H,W flattening before fc6.
"""

from keras import layers

from kcnn import blocks
from kcnn.layers import LocalResponseNormalization
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_choice, check_fraction, check_positive_int

# The input and output channels of the grouped convolutions (conv2: 96 -> 256, conv4:
# 384 -> 384, conv5: 384 -> 256), which `groups` must divide.
_GROUPED_CHANNELS = (96, 256, 384)
_VARIANTS = ("paper", "caffe")


@builder(default_input_shape=(227, 227, 3))
def alexnet(
    *,
    groups=2,
    dropout=0.5,
    variant="paper",
):
    """AlexNet as in the paper: 227x227 input, LRN after conv1 and conv2, overlapping
    3x3/2 max pooling, grouped convolutions, dropout in fc6 and fc7.

    Args:
        groups: groups of conv2, conv4 and conv5 (2 = the paper's two GPUs, 1 = the
            single-GPU variant with more parameters).
        dropout: the classifier's dropout, after fc6 and fc7.
        variant: "paper", or "caffe": the BVLC Caffe release's arithmetic, which
            `weights="imagenet"` (the BVLC weights) builds. It differs in three
            places: LRN with Caffe's constants (k=1, alpha=1e-4 divided by n=5, see
            `LocalResponseNormalization.caffe`); pool5 padded by one row and column at
            the bottom and right (`pool5_pad`, Caffe2's explicit form of Caffe's
            rounding up, which lets a 224x224 input reach 6x6 as the ONNX Model Zoo
            file does; at 227 no window reaches the padding, so this is Caffe's own
            arithmetic there); and pool5 flattened in C,H,W order (`pool5_chw`),
            as Caffe feeds fc6. Same layers and parameters otherwise.
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: the builder contract; default input 227x227x3.
    """
    groups = check_positive_int("groups", groups)
    if any(channels % groups for channels in _GROUPED_CHANNELS):
        divisors = [g for g in range(1, 97) if not any(channels % g for channels in _GROUPED_CHANNELS)]
        raise ValueError(
            f"`groups` must divide the channels of conv2, conv4 and conv5 {_GROUPED_CHANNELS}: one of {divisors}. "
            f"Received: groups={groups!r}"
        )
    dropout = check_fraction("dropout", dropout)
    caffe = check_choice("variant", variant, _VARIANTS) == "caffe"

    def conv(x, filters, kernel_size, strides=1, padding="same", *, groups=1, name):
        return layers.Conv2D(filters, kernel_size, strides, padding, groups=groups, activation="relu", name=name)(x)

    def norm(x, name):
        return LocalResponseNormalization.caffe(name=name)(x) if caffe else LocalResponseNormalization(name=name)(x)

    def trunk(x):
        x = conv(x, 96, 11, 4, "valid", name="conv1")  # 55x55x96
        x = norm(x, "norm1")
        x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # 27x27x96
        x = conv(x, 256, 5, groups=groups, name="conv2")  # 27x27x256
        x = norm(x, "norm2")
        x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)  # 13x13x256
        x = conv(x, 384, 3, name="conv3")
        x = conv(x, 384, 3, groups=groups, name="conv4")
        x = conv(x, 256, 3, groups=groups, name="conv5")  # 13x13x256
        if caffe:
            # Zeros stand for Caffe's clipped windows: the map is a ReLU's (>= 0).
            x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="pool5_pad")(x)
        return layers.MaxPooling2D(3, strides=2, name="pool5")(x)  # 6x6x256

    def top(x, classes, classifier_activation):
        if caffe:
            x = layers.Permute((3, 1, 2), name="pool5_chw")(x)  # 256x6x6
        return blocks.classifier_head(
            x,
            classes,
            pooling="flatten",
            hidden_units=(4096, 4096),
            hidden_names=("fc6", "fc7"),
            dropout=dropout,
            classifier_activation=classifier_activation,
        )

    return Network(trunk, top, flattens=True)


SPECS = spec_table(
    family="alexnet",
    builder=alexnet,
    year=2012,
    paper="Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural Networks",
    default_input_shape=(227, 227, 3),
    rows={"alexnet": {}},
)
# The registered model (keyword-only, and `weights="imagenet"` picks its table row).
alexnet = SPECS["alexnet"].function()
