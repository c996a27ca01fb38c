"""What the segmentation builders share: the keyword-only contract and its checks, the
per-pixel output, and the backbone weights they take.

The contract (every segmentation builder, after its own options):
`classes=21, input_shape=None, weights=None, classifier_activation="softmax", name=None`,
keyword-only. The output is per-pixel class probabilities (batch, H, W, classes) at the
input's height and width (logits with `classifier_activation=None`), from a last layer
named `predictions`. `weights` are the backbone's: None, a tag of its weight sets
("imagenet", `kcnn weights list`) or a file its classifier builder loads.
"""

import functools
import inspect

from keras import layers

from kcnn.models._checks import (
    check_activation,
    check_keywords,
    check_name,
    check_positive_int,
    check_softmax_classes,
    check_weights_file,
    resolve_input_shape,
)

#: PASCAL VOC's 20 classes and the background, the FCN paper's benchmark.
DEFAULT_CLASSES = 21


def segmentation_builder(architecture):
    """Makes a builder keyword-only, refusing unknown and positional arguments with
    what it received (as `kcnn.models` builders do)."""
    parameters = inspect.signature(architecture).parameters

    @functools.wraps(architecture)
    def build(*args, **kwargs):
        if args:
            raise TypeError(
                f"`{architecture.__name__}` takes keyword arguments only. "
                f"Received: {len(args)} positional argument(s) {', '.join(map(repr, args))}"
            )
        check_keywords(architecture.__name__, parameters, kwargs)
        return architecture(**kwargs)

    return build


def check_contract(*, name, classes, input_shape, default_input_shape, weights, backbone, classifier_activation):
    """The contract's arguments, checked before any layer is built.

    Returns:
        (classes, input shape (H, W, C), weights): normalized; H and W may be None.
    """
    check_name(name)
    classes = check_positive_int("classes", classes)
    check_activation("classifier_activation", classifier_activation)
    check_softmax_classes(classes, classifier_activation)
    shape = resolve_input_shape(input_shape, None, default_input_shape, allow_unknown_size=True)
    return classes, shape, check_backbone_weights(weights, backbone)


def check_backbone_weights(weights, backbone):
    """None, a weights tag of the registered `backbone` (resolved, so an unknown one
    fails here), or an existing weights file."""
    from kcnn.weights import table

    if weights is None:
        return None
    if table.is_tag(weights):
        table.resolve(backbone, weights)
        return weights
    return check_weights_file(weights)


def predictions(scores, classifier_activation):
    """The last layer: per-pixel class probabilities (softmax over the channel axis),
    or logits for None."""
    return layers.Activation(classifier_activation, name="predictions")(scores)
