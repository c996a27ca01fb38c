"""The fully connected baseline: flatten the image and multiply by W.

A 32x32x3 image becomes a 3072-vector x and the class scores are Wx + b (CS231n's
linear classifier); hidden layers make it a multi-layer perceptron. It throws the
spatial structure away, which is what the convolutional layer keeps.
"""

from kcnn import blocks
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_activation, check_depth, check_fraction, check_positive_ints


@builder(default_input_shape=(32, 32, 3), classes=10)
def mlp(
    hidden_units=(),
    *,
    dropout=0.0,
    activation="relu",
):
    """The fully connected baseline.

    Layers: `flatten`, the hidden layers `fc1`, `fc2`, ... each followed by dropout
    (`fc1_dropout`, ...; without hidden layers one `dropout` before the classifier),
    then `predictions`. With `include_top=False` the model is the identity on the
    image (there is no feature extractor to keep); `pooling` then pools the image.

    Args:
        hidden_units: widths of the hidden layers; () is the linear classifier Wx + b.
        dropout: the classifier's dropout: after each hidden layer, or before
            `predictions` when there are none.
        activation: activation of the hidden layers.
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: the builder contract; the default input is
            32x32x3 (CIFAR-10, 3072 inputs) with 10 classes.
    """
    hidden_units = check_positive_ints("hidden_units", hidden_units, allow_empty=True)
    check_depth(len(hidden_units), "hidden layers", hidden_units=hidden_units)
    dropout = check_fraction("dropout", dropout)
    check_activation("activation", activation)

    def top(x, classes, classifier_activation):
        return blocks.classifier_head(
            x,
            classes,
            pooling="flatten",
            hidden_units=hidden_units,
            dropout=dropout,
            activation=activation,
            classifier_activation=classifier_activation,
        )

    return Network(lambda x: x, top, flattens=True)


SPECS = spec_table(
    family="mlp",
    builder=mlp,
    year=1958,
    paper="Rosenblatt, The Perceptron; the linear classifier of CS231n",
    default_input_shape=(32, 32, 3),
    rows={"mlp": {}},
)
