"""The plain ConvNet: stages of [conv-ReLU] x N followed by pooling, then a classifier.

Every geometric choice is an argument, so the tuner can search filter sizes, strides,
padding, widths and depth (`kcnn.tune`); VGG is this stack with a fixed table.
"""

from keras import layers

from kcnn import blocks
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import (
    check_bool,
    check_choice,
    check_depth,
    check_fraction,
    check_positive_int,
    check_positive_ints,
    per_stage,
)

_PADDINGS = ("same", "valid")


def stage_options(num_stages, *, convs_per_stage, kernel_size, strides, padding, pool):
    """The per-stage options of `conv_stages`, checked: one tuple of `num_stages`
    values each (a single value stands for every stage)."""
    return dict(
        convs_per_stage=per_stage("convs_per_stage", convs_per_stage, num_stages, check_positive_int),
        kernel_size=per_stage("kernel_size", kernel_size, num_stages, check_positive_int),
        strides=per_stage("strides", strides, num_stages, check_positive_int),
        padding=per_stage("padding", padding, num_stages, lambda argument, value: check_choice(argument, value, _PADDINGS)),
        pool=per_stage("pool", pool, num_stages, check_bool),
    )


def conv_stages(
    x,
    filters,
    *,
    convs_per_stage=2,
    kernel_size=3,
    strides=1,
    padding="same",
    pool=True,
    pool_size=2,
    batch_norm=False,
    bn_epsilon=1e-3,
    use_bias=True,
    stage_dropout=0.0,
):
    """Stages of convolutions, each optionally followed by max pooling.

    Layer names are keras.applications' VGG names: `block{s}_conv{i}` and
    `block{s}_pool` (BatchNorm: `block{s}_conv{i}_bn`, `block{s}_conv{i}_relu`).

    Args:
        x: input tensor.
        filters: width of each stage; its length is the depth in stages.
        convs_per_stage, kernel_size, strides, padding, pool: a value for every stage
            or a list/tuple of one per stage: positive ints (`strides` applies to a
            stage's first convolution), "same" or "valid", True or False.
        pool_size: max-pooling window and stride.
        batch_norm: BatchNorm after every convolution.
        bn_epsilon: its epsilon (Keras' default 1e-3; VGG-BN takes torchvision's 1e-5).
        use_bias: convolution biases.
        stage_dropout: dropout after each stage (`block{s}_dropout`; 0 = none).
    """
    given = dict(filters=filters, convs_per_stage=convs_per_stage)
    filters = check_positive_ints("filters", filters)
    num_stages = len(filters)
    options = stage_options(
        num_stages, convs_per_stage=convs_per_stage, kernel_size=kernel_size, strides=strides, padding=padding, pool=pool
    )
    check_depth(sum(options["convs_per_stage"]), "convolutions", **given)
    convs_per_stage, kernel_size, strides, padding, pool = (
        options[key] for key in ("convs_per_stage", "kernel_size", "strides", "padding", "pool")
    )
    batch_norm = check_bool("batch_norm", batch_norm)
    stage_dropout = check_fraction("stage_dropout", stage_dropout)
    for stage in range(num_stages):
        for index in range(convs_per_stage[stage]):
            x = blocks.conv_bn_act(
                x,
                filters[stage],
                kernel_size[stage],
                strides[stage] if index == 0 else 1,
                padding[stage],
                name=f"block{stage + 1}_conv{index + 1}",
                conv_suffix="",
                batch_norm=batch_norm,
                bn_epsilon=bn_epsilon,
                use_bias=use_bias,
            )
        if pool[stage]:
            x = layers.MaxPooling2D(pool_size, name=f"block{stage + 1}_pool")(x)
        if stage_dropout:
            x = layers.Dropout(stage_dropout, name=f"block{stage + 1}_dropout")(x)
    return x


@builder(
    default_input_shape=(32, 32, 3),
    classes=10,
    renamed={"dense_units": "hidden_units", "head_dropout": "dropout"},
)
def convnet(
    filters=(32, 64, 128),
    *,
    convs_per_stage=2,
    kernel_size=3,
    strides=1,
    padding="same",
    pool=True,
    batch_norm=False,
    stage_dropout=0.0,
    hidden_units=(128,),
    dropout=0.5,
):
    """A plain [conv-ReLU] x N - pool ConvNet with a fully connected classifier.

    Defaults to CIFAR-sized inputs (32x32x3) and 10 classes: this is the lectures'
    "ConvNet" that sits between the fully connected baseline and the named networks.

    Args:
        filters: width of each stage; the number of entries is the depth.
        convs_per_stage, kernel_size, strides, padding, pool: see `conv_stages`.
        batch_norm: BatchNorm after every convolution.
        stage_dropout: dropout after each stage.
        hidden_units: widths of the classifier's hidden fully connected layers
            (`fc1`, ...), as `mlp`'s.
        dropout: the classifier's dropout: after each hidden layer, or before
            `predictions` when there are none.
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: the builder contract (see `kcnn`).
    """
    given = dict(filters=filters, convs_per_stage=convs_per_stage)
    filters = check_positive_ints("filters", filters)
    options = stage_options(
        len(filters), convs_per_stage=convs_per_stage, kernel_size=kernel_size, strides=strides, padding=padding, pool=pool
    )
    check_depth(sum(options["convs_per_stage"]), "convolutions", **given)
    batch_norm = check_bool("batch_norm", batch_norm)
    stage_dropout = check_fraction("stage_dropout", stage_dropout)
    hidden_units = check_positive_ints("hidden_units", hidden_units, allow_empty=True)
    check_depth(len(hidden_units), "hidden layers", hidden_units=hidden_units)
    dropout = check_fraction("dropout", dropout)

    def trunk(x):
        return conv_stages(x, filters, **options, batch_norm=batch_norm, stage_dropout=stage_dropout)

    def top(x, classes, classifier_activation):
        return blocks.classifier_head(
            x,
            classes,
            pooling="flatten",
            hidden_units=hidden_units,
            dropout=dropout,
            classifier_activation=classifier_activation,
        )

    return Network(trunk, top, flattens=True)


SPECS = spec_table(
    family="convnet",
    builder=convnet,
    year=2012,
    paper="The plain conv-ReLU-pool ConvNet (CS231n)",
    default_input_shape=(32, 32, 3),
    rows={"convnet": {}},
)
