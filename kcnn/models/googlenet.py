"""GoogLeNet: nine inception modules between a convolutional stem and one dense layer.

Reference: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (arXiv 2014),
table 1 and figure 3. The paper's network, not torchvision's: true 5x5 branches, local
response normalization in the stem and no BatchNorm.

`variant="caffe"` is the network the BVLC Caffe weights were trained and published in
(`models/bvlc_googlenet/deploy.prototxt` of BVLC/caffe), as the ONNX Model Zoo's
`googlenet-12.onnx` runs it: conv1 padded by 3 on every side, max pools that round up,
Caffe's local response normalization (k=1, alpha/n).
"""

from keras import layers

from kcnn import blocks
from kcnn.layers import LocalResponseNormalization
from kcnn.models._base import Network, builder, spec_table
from kcnn.models._checks import check_bool, check_choice, check_depth, check_fraction, check_positive_int, check_positive_ints

# Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) of each module,
# by stage (3a-3b, 4a-4e, 5a-5b); a 3x3/2 max pool follows every stage but the last.
STAGES = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)
# The auxiliary classifiers read these modules' outputs.
_AUXILIARY_AFTER = {"4a": "aux1", "4d": "aux2"}
_STEMS = ("imagenet", "small")
_VARIANTS = ("paper", "caffe")


def _module_name(stage, index):
    return f"inception{stage + 3}{chr(ord('a') + index)}"


def _max_pool(x, name, caffe):
    """The 3x3/2 max pool between stages. Caffe rounds the output size up (its
    pooling_layer.cpp), which is a valid pool after one row and column of padding at
    the bottom and right, for any input size (Caffe2 and the ONNX file write it so);
    zeros stand for the clipped windows, as every pooled map is a ReLU's (>= 0)."""
    if not caffe:
        return layers.MaxPooling2D(3, strides=2, padding="same", name=name)(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name=name)(x)


def _stem(x, stem, width, batch_norm, caffe):
    if stem == "small":
        # For 32x32 images: one 3x3/1 convolution keeps the full resolution.
        return blocks.conv_bn_act(x, width, 3, name="conv1", conv_suffix="", batch_norm=batch_norm)
    lrn = LocalResponseNormalization.caffe if caffe else LocalResponseNormalization
    if caffe:  # Caffe pads 3 on every side; "same" pads (2, 3) at stride 2.
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, padding="valid" if caffe else "same", activation="relu", name="conv1")(x)
    x = _max_pool(x, "pool1", caffe)  # 56x56x64
    x = lrn(name="norm1")(x)
    x = layers.Conv2D(64, 1, activation="relu", name="conv2_reduce")(x)
    x = layers.Conv2D(192, 3, padding="same", activation="relu", name="conv2")(x)
    x = lrn(name="norm2")(x)
    return _max_pool(x, "pool2", caffe)  # 28x28x192


@builder(default_input_shape=(224, 224, 3))
def googlenet(
    *,
    stages=STAGES,
    stem="imagenet",
    stem_width=64,
    batch_norm=False,
    aux_logits=False,
    dropout=0.4,
    variant="paper",
):
    """GoogLeNet (Inception v1), or an inception network of another table.

    Layer names follow the paper's table: `conv1`, `pool1`, `norm1`, `conv2_reduce`,
    `conv2`, `norm2`, `pool2`, `inception3a_1x1` ... `inception5b_concat` (stage i's
    modules are `inception{i + 3}a`, `b`, ...), `pool3`, `pool4`, `avg_pool`,
    `dropout`, `predictions`; the auxiliary heads are `aux1_*` (on 4a) and `aux2_*`
    (on 4d).

    Args:
        stages: per stage, the widths (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
            pool proj) of its inception modules; default the paper's table 1.
        stem: "imagenet" (the paper's 7x7/2 conv, pools, LRN and 3x3 conv: 224 ->
            28) or "small" (one 3x3/1 convolution of `stem_width`, for 32x32 images).
        stem_width: filters of the "small" stem.
        batch_norm: BatchNorm after each inception convolution and the small stem's
            (not in the paper).
        aux_logits: add the two auxiliary classifiers (needs a stage 4 with at least
            four modules); the model then has three outputs [predictions,
            aux1_predictions, aux2_predictions], trained with loss weights 1, 0.3, 0.3
            and dropped for inference (`kcnn.train` does both).
        dropout: the classifier's dropout, before it (the paper's 0.4; the
            auxiliary heads keep the paper's 0.7).
        variant: "paper", or "caffe": the BVLC Caffe release's arithmetic, which
            `weights="imagenet"` (the BVLC weights) builds: conv1 padded by 3 on
            every side (`conv1_pad`; "same" pads 2 and 3), the four 3x3/2 max pools
            rounding up (`pool1_pad` ...; equal to "same" at 224x224, not at every
            size), Caffe's LRN constants (`LocalResponseNormalization.caffe`), and the
            auxiliary heads flattening C,H,W (`aux1_chw`). Needs the imagenet stem
            without BatchNorm. Same layers and parameters otherwise.
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: the builder contract (see `kcnn`).
    """
    check_choice("stem", stem, _STEMS)
    stages = _check_stages(stages)
    stem_width = check_positive_int("stem_width", stem_width)
    batch_norm = check_bool("batch_norm", batch_norm)
    aux_logits = check_bool("aux_logits", aux_logits)
    dropout = check_fraction("dropout", dropout)
    caffe = check_choice("variant", variant, _VARIANTS) == "caffe"
    if caffe and (stem != "imagenet" or batch_norm):
        raise ValueError(
            "`variant='caffe'` is the BVLC network: the imagenet stem, no BatchNorm. "
            f"Received: stem={stem!r}, batch_norm={batch_norm!r}"
        )
    names = {_module_name(stage, index) for stage, modules in enumerate(stages) for index in range(len(modules))}
    if aux_logits and not {f"inception{module}" for module in _AUXILIARY_AFTER} <= names:
        raise ValueError(
            "`aux_logits` needs the modules 4a and 4d (a second stage of at least four modules). "
            f"Received: stages with modules {sorted(names)}"
        )

    def trunk(x):
        x = _stem(x, stem, stem_width, batch_norm, caffe)
        auxiliary_inputs = []
        for stage, modules in enumerate(stages):
            for index, widths in enumerate(modules):
                module = _module_name(stage, index)
                x = blocks.inception_block(x, widths, name=module, batch_norm=batch_norm)
                if aux_logits and module[len("inception") :] in _AUXILIARY_AFTER:
                    auxiliary_inputs.append(x)  # 14x14x512 (4a), 14x14x528 (4d)
            if stage + 1 < len(stages):
                x = _max_pool(x, f"pool{stage + 3}", caffe)
        # 7x7x1024
        if not aux_logits:
            return x
        # The auxiliary heads' pooling belongs to the size check: it needs 5x5 maps.
        pooled = [
            layers.AveragePooling2D(5, strides=3, name=f"{aux}_pool")(tensor)
            for aux, tensor in zip(_AUXILIARY_AFTER.values(), auxiliary_inputs)
        ]
        return [x, *pooled]

    def top(features, classes, classifier_activation):
        x = features[0] if aux_logits else features
        outputs = blocks.classifier_head(x, classes, pooling="avg", dropout=dropout, classifier_activation=classifier_activation)
        if not aux_logits:
            return outputs
        auxiliary = [
            _auxiliary_head(pooled, classes, classifier_activation, aux, caffe)
            for aux, pooled in zip(_AUXILIARY_AFTER.values(), features[1:])
        ]
        return [outputs, *auxiliary]

    return Network(trunk, top)


def _check_stages(stages):
    """Stages of modules of six positive widths, as tuples."""
    expected = (
        "`stages` must be a non-empty sequence of stages, each a non-empty sequence of inception modules, "
        "each 6 positive widths (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)"
    )
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ValueError(f"{expected}. Received: stages={stages!r}")
    checked = []
    for stage in stages:
        if not isinstance(stage, (list, tuple)) or not stage:
            raise ValueError(f"{expected}. Received: stages={stages!r}")
        modules = []
        for widths in stage:
            try:
                widths = check_positive_ints("widths", widths)
            except ValueError:
                widths = ()
            if len(widths) != 6:
                raise ValueError(f"{expected}. Received: stages={stages!r}")
            modules.append(widths)
        checked.append(tuple(modules))
    check_depth(sum(map(len, checked)), "inception modules", stages=stages)
    return tuple(checked)


def _auxiliary_head(pooled, classes, classifier_activation, name, caffe):
    """Figure 3's side branch after its 5x5/3 average pool (in the trunk): 1x1x128
    conv, fc 1024, dropout 0.7, classifier. At 224x224 it flattens 4x4x128 (Caffe:
    in C,H,W order)."""
    x = layers.Conv2D(128, 1, activation="relu", name=f"{name}_conv")(pooled)  # 4x4x128
    if caffe:
        x = layers.Permute((3, 1, 2), name=f"{name}_chw")(x)
    return blocks.classifier_head(
        x,
        classes,
        pooling="flatten",
        hidden_units=(1024,),
        hidden_names=(f"{name}_fc",),
        dropout=0.7,
        classifier_activation=classifier_activation,
        name=name,
    )


SPECS = spec_table(
    family="googlenet",
    builder=googlenet,
    year=2014,
    paper="Szegedy et al., Going Deeper with Convolutions",
    default_input_shape=(224, 224, 3),
    rows={"googlenet": {}},
)
# The registered model (keyword-only, and `weights="imagenet"` picks its table row).
googlenet = SPECS["googlenet"].function()
