"""A U-Net decoder on any kcnn classifier's pyramid.

Reference: Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015, figure 1: the expanding path upsamples, concatenates
the contracting path's map of the same scale, and applies two 3x3 convolutions with
ReLU, then a 1x1 convolution scores the classes. As in U-Nets on pretrained encoders
(TernausNet, segmentation_models): the contracting path is a classifier's trunk, its
maps the backbone's pyramid levels (`kcnn.dense.pyramid`); the convolutions are 'same'
with BatchNorm; upsampling is bilinear, to the skip's size (`ResizeToReference`), so
every input size the backbone takes gives an output of its size.

Layers (n = the level joined, stride 2**n): `decoder{n}_upsample`,
`decoder{n}_concat`, `decoder{n}_1_conv/_bn/_relu`, `decoder{n}_2_*`; a last block
`decoder0_*` at the input's resolution where the backbone has no stride-1 level (it
upsamples without a skip); `score` (1x1, classes), `score_resize` where valid
convolutions left the stride-1 level smaller than the input (LeNet), `predictions`.
"""

import keras
from keras import layers

from kcnn import blocks, shapes
from kcnn.dense._base import DEFAULT_CLASSES, check_contract, predictions, segmentation_builder
from kcnn.dense.layers import ResizeToReference
from kcnn.dense.pyramid import pyramid_levels
from kcnn.models._base import spec_table
from kcnn.models._checks import check_positive_int

__all__ = ["unet"]

# The backbone builder's arguments that the U-Net sets itself (its contract's).
_OWN = ("include_top", "pooling", "input_tensor", "input_shape", "weights", "classes", "classifier_activation", "name")


@segmentation_builder
def unet(
    *,
    backbone="resnet18",
    backbone_kwargs=None,
    decoder_width=16,
    classes=DEFAULT_CLASSES,
    input_shape=None,
    weights=None,
    classifier_activation="softmax",
    name=None,
):
    """A U-Net: a classifier's trunk as the contracting path, a decoder on its levels.

    Args:
        backbone: a registered classifier whose pyramid the decoder reads: every
            family but the MLP (`kcnn.backbone(backbone).feature_info` lists its levels);
            default ResNet-18, the smallest ("resnet34" is segmentation_models').
        backbone_kwargs: the backbone builder's own options, e.g. {"variant": "v1.5"}
            or {"output_stride": 16} (not the contract's: input_shape, weights, ...
            are the U-Net's).
        decoder_width: the decoder block at level n has `decoder_width * 2**n`
            filters: 256, 128, 64, 32, 16 from P4 to the input's resolution by
            default (segmentation_models' decoder).
        classes: per-pixel classes (default 21).
        input_shape: (H, W, C); default the backbone's; (None, None, C) takes any size
            the backbone takes.
        weights: the backbone's: None, a tag of its weight sets ("imagenet") or a file
            its builder loads (`kcnn.create_model(backbone, include_top=False,
            weights=...)`); the decoder starts from Keras' initialisers.
        classifier_activation: "softmax" (per-pixel probabilities) or None (logits).
        name: the model's name (default "unet").

    Returns:
        A functional `keras.Model`: (batch, H, W, C) -> (batch, H, W, classes), whose
        backbone layers keep the classifier's names (weights and fine-tuning prefixes
        apply unchanged).
    """
    from kcnn import registry

    spec = registry.get_spec(backbone) if isinstance(backbone, str) else None
    if spec is None or spec.task != "classification":
        raise ValueError(
            "`backbone` must be a registered classifier's name (`kcnn.list_models()`), e.g. 'resnet34'. "
            f"Received: backbone={backbone!r}"
        )
    backbone_kwargs = _check_backbone_kwargs(backbone_kwargs)
    decoder_width = check_positive_int("decoder_width", decoder_width)
    classes, shape, weights = check_contract(
        name="unet" if name is None else name,
        classes=classes,
        input_shape=input_shape,
        default_input_shape=spec.default_input_shape,
        weights=weights,
        backbone=backbone,
        classifier_activation=classifier_activation,
    )
    trunk = spec.build(include_top=False, input_shape=shape, weights=weights, **backbone_kwargs)
    levels = pyramid_levels(trunk)
    inputs = trunk.inputs[0]
    x = trunk.get_layer(levels[-1].layer).output
    skips = [(level.stride.bit_length() - 1, trunk.get_layer(level.layer).output) for level in reversed(levels[:-1])]
    if levels[0].stride > 1:
        skips.append((0, None))  # up to the input's resolution, without a skip
    for level, skip in skips:
        x = _decoder_block(x, skip if skip is not None else inputs, skip, decoder_width * 2**level, f"decoder{level}")
    scores = layers.Conv2D(classes, 1, name="score")(x)
    if levels[0].stride == 1 and _has_border(trunk, levels[0]):
        scores = ResizeToReference(name="score_resize")([scores, inputs])
    model = keras.Model(inputs, predictions(scores, classifier_activation), name="unet" if name is None else name)
    from kcnn.weights import transfer

    weight_set = transfer.weight_set_of(trunk)
    if weight_set is not None:
        transfer.remember(model, weight_set)
    return model


def _has_border(trunk, level):
    """Whether valid convolutions make a stride-1 level smaller than the input (LeNet's
    conv1: 28x28 of 32x32); the same at every input size, so one size tells."""
    declared = tuple(trunk.inputs[0].shape[1:3])
    size = declared if None not in declared else (shapes.min_input_size(trunk),) * 2
    return shapes.trace(trunk, size).row(level.layer).output_shape[:2] != size


def _decoder_block(x, reference, skip, filters, name):
    """Upsample to `reference`'s size, concatenate `skip` (if any), two 3x3
    conv-BN-ReLU."""
    x = ResizeToReference(name=f"{name}_upsample")([x, reference])
    if skip is not None:
        x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    for index in (1, 2):
        x = blocks.conv_bn_act(x, filters, 3, name=f"{name}_{index}", use_bias=False)
    return x


def _check_backbone_kwargs(backbone_kwargs):
    if backbone_kwargs is None:
        return {}
    if not isinstance(backbone_kwargs, dict) or not all(isinstance(key, str) for key in backbone_kwargs):
        raise ValueError(
            "`backbone_kwargs` must be None or a dict of the backbone builder's arguments, e.g. {'variant': 'v1.5'}. "
            f"Received: backbone_kwargs={backbone_kwargs!r}"
        )
    own = [key for key in backbone_kwargs if key in _OWN]
    if own:
        raise ValueError(
            f"`backbone_kwargs` takes the backbone's own options; {', '.join(own)} are the U-Net's arguments. "
            f"Received: backbone_kwargs={backbone_kwargs!r}"
        )
    return dict(backbone_kwargs)


SPECS = spec_table(
    family="unet",
    builder=unet,
    year=2015,
    paper="Ronneberger et al., U-Net: Convolutional Networks for Biomedical Image Segmentation",
    default_input_shape=(224, 224, 3),
    rows={"unet": {}},
    task="segmentation",
)
