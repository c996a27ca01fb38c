"""AlexNet: the two-GPU network of the 2012 ImageNet competition.

Reference: Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NIPS 2012, section 3 and figure 2. The two GPUs'
halves are `groups=2` convolutions (conv2, conv4, conv5 see only their own GPU's
maps; conv3 and the fully connected layers see both).
"""

from keras import layers

from kcnn import blocks
from kcnn.layers import LocalResponseNormalization
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_fraction, check_positive_int

# The input and output channels of the grouped convolutions (conv2: 96 -> 256, conv4:
# 384 -> 384, conv5: 384 -> 256), which `groups` must divide.
_GROUPED_CHANNELS = (96, 256, 384)


@builder(default_input_shape=(227, 227, 3))
def alexnet(
    *,
    groups=2,
    dropout=0.5,
):
    """AlexNet as in the paper: 227x227 input, LRN after conv1 and conv2, overlapping
    3x3/2 max pooling, grouped convolutions, dropout in fc6 and fc7.

    Args:
        groups: groups of conv2, conv4 and conv5 (2 = the paper's two GPUs, 1 = the
            single-GPU variant with more parameters).
        dropout: the classifier's dropout, after fc6 and fc7.
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

    def conv(x, filters, kernel_size, strides=1, padding="same", *, groups=1, name):
        return layers.Conv2D(
            filters, kernel_size, strides, padding, groups=groups, activation="relu", name=name
        )(x)

    def trunk(x):
        x = conv(x, 96, 11, 4, "valid", name="conv1")  # 55x55x96
        x = LocalResponseNormalization(name="norm1")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # 27x27x96
        x = conv(x, 256, 5, groups=groups, name="conv2")  # 27x27x256
        x = LocalResponseNormalization(name="norm2")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)  # 13x13x256
        x = conv(x, 384, 3, name="conv3")
        x = conv(x, 384, 3, groups=groups, name="conv4")
        x = conv(x, 256, 3, groups=groups, name="conv5")  # 13x13x256
        return layers.MaxPooling2D(3, strides=2, name="pool5")(x)  # 6x6x256

    def top(x, classes, classifier_activation):
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
