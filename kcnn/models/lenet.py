"""LeNet-5: two convolution + subsampling pairs, then fully connected layers.

Reference: LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to
Document Recognition", Proceedings of the IEEE, 1998, section II.B and figure 2.

Layer names carry the paper's layer numbers (C1, S2, C3, S4, C5, F6):
`conv1`, `pool2`, `conv3`, `pool4`, `conv5`, `flatten`, `fc6`, `predictions`.
"""

from keras import layers

from kcnn import blocks
from kcnn.layers import ConnectionTableConv2D, EuclideanRBF, Subsampling2D, lecun_tanh
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_choice

# Table I of the paper: the input maps of S2 that each of C3's 16 maps sees.
# Maps 0-5 see 3 neighbouring maps, 6-11 four neighbouring, 12-14 four with a gap,
# 15 all six.
C3_TABLE = tuple(
    tuple(sorted((j + i) % 6 for i in offsets))
    for offsets, starts in (((0, 1, 2), range(6)), ((0, 1, 2, 3), range(6)), ((0, 1, 3, 4), range(3)))
    for j in starts
) + (tuple(range(6)),)


@builder(default_input_shape=(32, 32, 1), classes=10)
def lenet5(
    *,
    variant="modern",
):
    """LeNet-5 on 32x32 single-channel images.

    Args:
        variant: "modern" (ReLU, 2x2 max pooling, full C3 connections, a dense
            softmax classifier: 61,706 parameters) or "paper" (the scaled tanh
            1.7159 tanh(2a/3), trainable subsampling, C3's partial connection table
            and Euclidean RBF outputs with fixed centres: 60,000 trainable
            parameters, as the paper counts).
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: the builder contract; the default input is
            (32, 32, 1) with 10 classes.
    """
    check_choice("variant", variant, ("modern", "paper"))
    paper = variant == "paper"
    activation = lecun_tanh if paper else "relu"

    def subsample(x, name):
        if paper:
            x = Subsampling2D(2, name=name)(x)
            return layers.Activation(lecun_tanh, name=f"{name}_tanh")(x)
        return layers.MaxPooling2D(2, name=name)(x)

    def trunk(x):
        x = layers.Conv2D(6, 5, activation=activation, name="conv1")(x)  # 28x28x6
        x = subsample(x, "pool2")  # 14x14x6
        if paper:
            x = ConnectionTableConv2D(C3_TABLE, 5, activation=lecun_tanh, name="conv3")(x)
        else:
            x = layers.Conv2D(16, 5, activation=activation, name="conv3")(x)  # 10x10x16
        x = subsample(x, "pool4")  # 5x5x16
        return layers.Conv2D(120, 5, activation=activation, name="conv5")(x)  # 1x1x120

    def top(x, classes, classifier_activation):
        if not paper:
            return blocks.classifier_head(
                x,
                classes,
                pooling="flatten",
                hidden_units=(84,),
                hidden_names=("fc6",),
                classifier_activation=classifier_activation,
            )
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(84, activation=lecun_tanh, name="fc6")(x)
        x = EuclideanRBF(classes, name="rbf")(x)
        return layers.Activation(classifier_activation, name="predictions")(x)

    return Network(trunk, top, flattens=True)


SPECS = spec_table(
    family="lenet",
    builder=lenet5,
    year=1998,
    paper="LeCun et al., Gradient-Based Learning Applied to Document Recognition",
    default_input_shape=(32, 32, 1),
    rows={"lenet5": {}},
)
