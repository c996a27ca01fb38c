"""Building blocks: small functions, tensor in and tensor out, every layer named.

Each block takes a `name` prefix and derives the names of its layers from it, so
weight transfer, fine-tuning and feature extraction can find them (the names are
public API, see the design notes).
"""

from keras import layers

from kcnn.layers import FusedBatchNormalization

_POOLINGS = (None, "avg", "max")


def _activation_name(activation):
    return activation if isinstance(activation, str) else "act"


def conv_bn_act(
    x,
    filters,
    kernel_size,
    strides=1,
    padding="same",
    *,
    name,
    conv_suffix="_conv",
    groups=1,
    dilation=1,
    batch_norm=True,
    use_bias=True,
    bn_epsilon=1e-3,
    activation="relu",
):
    """Convolution, optional BatchNorm, optional activation.

    Layer names: `{name}{conv_suffix}`, `{name}_bn`, `{name}_{activation}`. Without
    BatchNorm the activation is fused into the convolution (as keras.applications
    builds VGG), so one `Conv2D` layer carries it.

    Args:
        x: input tensor (N, H, W, C).
        filters, kernel_size, strides, padding, groups: as `keras.layers.Conv2D`.
        dilation: its `dilation_rate`.
        name: prefix of the layer names.
        conv_suffix: suffix of the convolution's name ("" names it `name` itself).
        batch_norm: add a BatchNormalization after the convolution (TensorFlow's
            fused kernel: `kcnn.layers.FusedBatchNormalization`).
        use_bias: give the convolution a bias.
        bn_epsilon: BatchNormalization epsilon.
        activation: activation name, callable or None.
    """
    fused = activation if not batch_norm else None
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        dilation_rate=dilation,
        use_bias=use_bias,
        activation=fused,
        name=f"{name}{conv_suffix}",
    )(x)
    if batch_norm:
        x = FusedBatchNormalization(axis=-1, epsilon=bn_epsilon, name=f"{name}_bn")(x)
        if activation is not None:
            x = layers.Activation(activation, name=f"{name}_{_activation_name(activation)}")(x)
    return x


def residual_conv_options(variant):
    """Per-variant details of a residual block's convolutions.

    v1 follows He et al. 2015 as keras.applications builds it (conv biases, BN epsilon
    1.001e-5, stride on the first 1x1 of a bottleneck); v1.5 follows torchvision (no
    conv bias, BN epsilon 1e-5, stride on the 3x3).
    """
    if variant == "v1":
        return dict(use_bias=True, bn_epsilon=1.001e-5)
    if variant == "v1.5":
        return dict(use_bias=False, bn_epsilon=1e-5)
    raise ValueError(f"`variant` must be 'v1' or 'v1.5'. Received: variant={variant!r}")


def _strided_conv(x, filters, kernel_size, strides, *, name, options, dilation=1):
    """A 'same' convolution; when strided, explicit symmetric zero padding instead of
    TensorFlow's asymmetric 'same', as torchvision pads (same output size). A dilated
    one pads `dilation` per side for a 3x3 ('same'), as torchvision's `padding=dilation`."""
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        return conv_bn_act(x, filters, kernel_size, strides, "valid", name=name, **options)
    return conv_bn_act(x, filters, kernel_size, strides, "same", name=name, dilation=dilation, **options)


def _shortcut_and_merge(inputs, residual, *, strides, projection, name, options):
    """Adds the shortcut to `residual` and applies the final ReLU.

    The projection (option B of the paper, a strided 1x1 conv + BN) is used where the
    shape changes unless `projection` forces it on or off.
    """
    out_channels = residual.shape[-1]
    if projection is None:
        projection = strides != 1 or inputs.shape[-1] != out_channels
    shortcut = inputs
    if projection:
        shortcut = conv_bn_act(
            inputs, out_channels, 1, strides, name=f"{name}_0", activation=None, **options
        )
    x = layers.Add(name=f"{name}_add")([shortcut, residual])
    return layers.Activation("relu", name=f"{name}_out")(x)


def basic_block(x, filters, *, strides=1, projection=None, variant="v1", dilation=1, first_dilation=None, name):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34).

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
    figure 5 (left).

    Args:
        x: input tensor.
        filters: width of both convolutions (and of the output).
        strides: stride of the first 3x3 (2 at the start of a stage).
        projection: None = a 1x1 projection shortcut where the shape changes;
            True/False forces it.
        variant: "v1" or "v1.5" (conv bias and BN epsilon; both stride the 3x3).
        dilation, first_dilation: dilation of the 3x3 convolutions (a stage that
            trades its stride for dilation, `kcnn.resnet(output_stride=...)`): the
            first 3x3 takes `first_dilation` (default `dilation`), the one a stride
            would have been on; the second `dilation` (timm's `first_dilation`).
        name: prefix, e.g. "conv3_block1".
    """
    options = residual_conv_options(variant)
    first_dilation = dilation if first_dilation is None else first_dilation
    residual = _strided_conv(x, filters, 3, strides, name=f"{name}_1", options=options, dilation=first_dilation)
    residual = conv_bn_act(residual, filters, 3, name=f"{name}_2", activation=None, dilation=dilation, **options)
    return _shortcut_and_merge(
        x, residual, strides=strides, projection=projection, name=name, options=options
    )


def bottleneck_block(
    x, filters, *, strides=1, expansion=4, projection=None, variant="v1", dilation=1, first_dilation=None, name
):
    """1x1 reduce, 3x3, 1x1 expand (x`expansion`) with a shortcut (ResNet-50/101/152).

    v1 strides the first 1x1 (the paper, keras.applications); v1.5 strides the 3x3
    (torchvision), which costs more MACs (4.09 G against 3.86 G for ResNet-50) and is
    slightly more accurate.

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
    figure 5 (right).

    Args:
        x: input tensor.
        filters: width of the 1x1 and 3x3 convolutions; the output has
            `filters * expansion` channels.
        strides: stride of the block (2 at the start of stages 3-5).
        expansion: output width factor.
        projection: None = a 1x1 projection shortcut where the shape changes.
        variant: "v1" or "v1.5".
        dilation, first_dilation: dilation of the 3x3 convolution: `first_dilation`
            (default `dilation`) in a stage's first block, as torchvision's
            `previous_dilation`; the 1x1 convolutions have none.
        name: prefix, e.g. "conv3_block1".
    """
    options = residual_conv_options(variant)
    stride_1x1, stride_3x3 = (strides, 1) if variant == "v1" else (1, strides)
    dilation_3x3 = dilation if first_dilation is None else first_dilation
    residual = conv_bn_act(x, filters, 1, stride_1x1, name=f"{name}_1", **options)
    residual = _strided_conv(residual, filters, 3, stride_3x3, name=f"{name}_2", options=options, dilation=dilation_3x3)
    residual = conv_bn_act(
        residual, filters * expansion, 1, name=f"{name}_3", activation=None, **options
    )
    return _shortcut_and_merge(
        x, residual, strides=strides, projection=projection, name=name, options=options
    )


def inception_block(x, widths, *, name, batch_norm=False):
    """Four parallel branches concatenated along channels (GoogLeNet's inception module).

    Branches: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3/1 max pool -> 1x1 pool
    projection. Layer names follow the paper's table columns: `{name}_1x1`,
    `{name}_3x3_reduce`, `{name}_3x3`, `{name}_5x5_reduce`, `{name}_5x5`, `{name}_pool`,
    `{name}_pool_proj`, `{name}_concat`.

    Reference: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, figure 2(b)
    and table 1.

    Args:
        x: input tensor.
        widths: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
        name: prefix, e.g. "inception4a".
        batch_norm: add BatchNorm after each convolution (not in the paper).
    """
    if len(widths) != 6:
        raise ValueError(
            "`widths` must hold 6 numbers (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, "
            f"pool proj). Received: widths={widths!r}"
        )
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = widths
    conv = dict(conv_suffix="", batch_norm=batch_norm, use_bias=not batch_norm)
    branch1 = conv_bn_act(x, n1x1, 1, name=f"{name}_1x1", **conv)
    branch2 = conv_bn_act(x, n3x3_reduce, 1, name=f"{name}_3x3_reduce", **conv)
    branch2 = conv_bn_act(branch2, n3x3, 3, name=f"{name}_3x3", **conv)
    branch3 = conv_bn_act(x, n5x5_reduce, 1, name=f"{name}_5x5_reduce", **conv)
    branch3 = conv_bn_act(branch3, n5x5, 5, name=f"{name}_5x5", **conv)
    branch4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch4 = conv_bn_act(branch4, pool_proj, 1, name=f"{name}_pool_proj", **conv)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")(
        [branch1, branch2, branch3, branch4]
    )


def check_pooling(pooling):
    if not (pooling is None or (isinstance(pooling, str) and pooling in _POOLINGS)):
        raise ValueError(
            f"`pooling` must be one of None, 'avg' or 'max'. Received: pooling={pooling!r}"
        )


def global_pool(x, pooling, *, name=""):
    """`pooling` None (return the 4D feature map), "avg" or "max" (2D features).

    Layer names: `{name}avg_pool` / `{name}max_pool`.
    """
    check_pooling(pooling)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=f"{name}avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=f"{name}max_pool")(x)
    return x


def classifier_head(
    x,
    classes,
    *,
    pooling="avg",
    hidden_units=(),
    hidden_names=None,
    dropout=0.0,
    activation="relu",
    classifier_activation="softmax",
    name="",
):
    """The classifier on top of a feature map (or of a feature vector, `pooling=None`).

    `pooling` ("avg", "max", "flatten" or None) -> for each hidden layer: Dense +
    `activation` -> dropout(`dropout`) -> Dense(`classes`) with `classifier_activation`.
    Without hidden layers, `dropout` comes before the classifier (GoogLeNet's 0.4), so
    `dropout` is always the classifier's dropout, whichever the layout.

    Layer names (with `prefix` = `name + "_"` when a name is given): `{prefix}avg_pool`
    / `{prefix}max_pool` / `{prefix}flatten`, `{prefix}dropout` (before the classifier,
    without hidden layers), the hidden layers' names (default `{prefix}fc1`,
    `{prefix}fc2`, ...) each followed by `{hidden}_dropout`, and `{prefix}predictions`.

    Args:
        x: the feature map (N, H, W, C), or a feature vector (N, C) with `pooling=None`.
        classes: outputs of the classifier.
        pooling: how the map becomes a vector.
        hidden_units: widths of the hidden fully connected layers.
        hidden_names: their layer names (default `fc1`, `fc2`, ...).
        dropout: dropout after each hidden layer, or before the classifier when there
            are none.
        activation: activation of the hidden layers.
        classifier_activation: activation of the classifier.
        name: prefix of the layer names (the auxiliary heads' `aux1`).
    """
    prefix = f"{name}_" if name else ""
    if pooling == "flatten":
        x = layers.Flatten(name=f"{prefix}flatten")(x)
    elif pooling in ("avg", "max"):
        x = global_pool(x, pooling, name=prefix)
    elif pooling is not None or len(x.shape) != 2:
        raise ValueError(
            "The classifier's `pooling` must be 'avg', 'max', 'flatten', or None for a feature vector. "
            f"Received: pooling={pooling!r} on features of shape {tuple(x.shape)}"
        )
    if dropout and not hidden_units:
        x = layers.Dropout(dropout, name=f"{prefix}dropout")(x)
    if hidden_names is None:
        hidden_names = [f"{prefix}fc{i + 1}" for i in range(len(hidden_units))]
    for units, hidden_name in zip(hidden_units, hidden_names, strict=True):
        x = layers.Dense(units, activation=activation, name=hidden_name)(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{hidden_name}_dropout")(x)
    return layers.Dense(classes, activation=classifier_activation, name=f"{prefix}predictions")(x)
