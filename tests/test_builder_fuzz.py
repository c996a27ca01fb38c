"""Every builder refuses every invalid argument at its entry, before any layer is built,
with a ValueError or TypeError that says what it received (Keras style).

The fuzz calls each registered builder (`kcnn.registry.MODELS`, through
`create_model` and through its public function) and each generic family builder with
one argument replaced by an invalid value, and `keras.Input` replaced by a function
that fails: a call that gets as far as building the model accepted the value.
"""

import math

import keras
import numpy as np
import pytest

import kcnn
from kcnn import registry
from kcnn.models import _base

# Wrong types, zero and negative sizes, empty tuples, bools where ints are expected,
# strings where bools are expected; what is invalid for an argument, by its name.
NOT_POSITIVE_INT = [0, -1, True, False, 2.5, "3", None, (3,), math.nan]
NOT_FRACTION = [-0.1, 1.0, 1.5, True, "0.5", None, math.nan, math.inf, (0.5,)]
NOT_BOOL = ["yes", "no", "False", 1, 0, 1.0, None, (True,)]
NOT_CHOICE = ["nope", 3, True, None, ("v1",)]
NOT_SIZES = [(), 5, "64", None, (0,), (-1,), (True,), (2.5,), ("8",), ((8,),), (8, None)]
NOT_HIDDEN_UNITS = [5, "64", None, (0,), (-8,), (True,), (2.5,), ("8",), ((8,),)]
WIDTHS = (8, 8, 8, 8, 8, 8)

BAD = {
    # The builder contract.
    "include_top": NOT_BOOL,
    "weights": [5, True, "imagenet-nonexistent", "weights.h5", "/nonexistent.weights.h5", ("a.keras",)],
    "input_tensor": [5, "x", np.zeros((1, 32, 32, 3)), [None]],
    "input_shape": [(32, 32), (32, 32, 3, 1), (32, 32, 0), (0, 32, 3), (32, -3, 3), (32, 32, 3.0),
                    (32, 32, True), (32, 32, None), "32", 32, (None, None, None)],
    "pooling": ["average", "flatten", 5, True, ("avg",)],
    "classes": NOT_POSITIVE_INT,
    "classifier_activation": ["nope", 5, True, ("softmax",)],
    "name": [5, "", "a/b", True, ("x",)],
    # Family options.
    "variant": NOT_CHOICE,
    "block": NOT_CHOICE,
    "stem": NOT_CHOICE,
    "width": NOT_POSITIVE_INT,
    "stem_width": NOT_POSITIVE_INT,
    "groups": [*NOT_POSITIVE_INT, 3, 5, 64],  # must divide AlexNet's 96, 256 and 384 channels
    "dropout": NOT_FRACTION,
    "stage_dropout": NOT_FRACTION,
    "batch_norm": NOT_BOOL,
    "aux_logits": NOT_BOOL,
    "activation": ["nope", 5, True, ("relu",)],
    "hidden_units": NOT_HIDDEN_UNITS,
    "filters": NOT_SIZES,
    # Per stage: one value for every stage, or a sequence of one per stage (convnet's
    # default has 3 stages, VGG 5).
    "convs_per_stage": [*NOT_POSITIVE_INT[:-1], (), (2, 2), (2, 2, 2, 2, 2, 2), (0, 2, 2), (2, -1, 2), (2, True, 2),
                        (0, 2, 2, 2, 2), (2, 2, 2, 2, True)],
    "kernel_size": [*NOT_POSITIVE_INT, (), (3, 3), (3, 3, 3, 3), (3, 0, 3), (3, 3.5, 3)],
    "strides": [*NOT_POSITIVE_INT, (), (1, 1), (1, 0, 1), (1, True, 1)],
    "padding": [*NOT_CHOICE, "full", (), ("same", "same"), ("same", "same", "full")],
    "pool": NOT_BOOL + [(), (True, True), (True, "yes", True)],
    # ResNet's dilation: the stride of one of its stages (4, 8, 16, 32 with the imagenet stem).
    "output_stride": [0, -1, True, False, 2.5, "16", 2, 12, 64, 16.0, (16,), math.nan],
    # The segmentation models (kcnn.dense).
    "stride": [0, 4, 64, True, "8", None, 8.0, (8,)],
    "backbone": ["resnet51", "fcn8s", "unet", 5, None, True, ("resnet18",)],
    "backbone_kwargs": [5, "variant=v1.5", [("variant", "v1.5")], {1: 2}, {"include_top": True}, {"weights": "imagenet"},
                        {"variant": "v3"}, {"depth": 3}],
    "decoder_width": NOT_POSITIVE_INT,
}
# ResNet's and GoogLeNet's `stages` differ: blocks per stage, or modules' widths per stage.
BAD_STAGES = {
    "resnet": NOT_SIZES,
    "googlenet": [(), ((),), 5, "abc", None, (WIDTHS,), ((WIDTHS[:5],),), ((WIDTHS + (8,),),), (((8, 8, 8, 8, 8, 0),),),
                  (((8, 8, 8, 8, 8, True),),), (((8, 8, 8, 8, 8, 2.5),),), (((8, 8, 8, 8, 8, "8"),),), ((WIDTHS,), ())],
}

GENERIC = {"resnet": kcnn.resnet, "vgg": kcnn.vgg, "googlenet": kcnn.googlenet, "convnet": kcnn.convnet, "mlp": kcnn.mlp}


def builders():
    """(id, callable, family, parameter names): every registered model twice (its
    public function and `create_model`) and the generic family builders."""
    out = []
    for name, spec in registry.MODELS.items():
        parameters = list(spec.signature().parameters)
        out.append((name, spec.function(), spec.family, parameters))
        out.append((f"create_model-{name}", lambda spec=spec, **kwargs: registry.create_model(spec.name, **kwargs),
                    spec.family, parameters))
    for name, function in GENERIC.items():
        family = registry.get_spec(name if name in registry.MODELS else f"{name}16" if name == "vgg" else f"{name}18").family
        out.append((f"kcnn.{name}", function, family, list(function.__signature__.parameters)))
    return out


BUILDERS = builders()


class Built(Exception):
    """The builder got as far as creating the model's input."""


@pytest.fixture
def no_building(monkeypatch):
    def refuse(*args, **kwargs):
        raise Built("keras.Input was called: the arguments were accepted")

    monkeypatch.setattr(_base.keras, "Input", refuse)


def cases(family, parameters):
    for parameter in parameters:
        values = BAD_STAGES[family] if parameter == "stages" else BAD[parameter]
        for value in values:
            yield parameter, value


def test_every_parameter_of_every_builder_has_invalid_values_to_try():
    assert len(BUILDERS) == 2 * len(registry.MODELS) + len(GENERIC)
    missing = {p for _, _, family, parameters in BUILDERS for p in parameters if p not in BAD and p != "stages"}
    assert not missing, f"add invalid values for {sorted(missing)} to BAD"
    total = sum(len(list(cases(family, parameters))) for _, _, family, parameters in BUILDERS)
    assert total > 1000


@pytest.mark.parametrize("build, family, parameters", [b[1:] for b in BUILDERS], ids=[b[0] for b in BUILDERS])
def test_builders_refuse_invalid_arguments_before_building(build, family, parameters, no_building):
    accepted, unclear = [], []
    for parameter, value in cases(family, parameters):
        try:
            build(**{parameter: value})
        except Built:
            accepted.append(f"{parameter}={value!r}")
        except (ValueError, TypeError) as error:
            if "Received:" not in str(error):
                unclear.append(f"{parameter}={value!r}: {type(error).__name__}: {error}")
        except Exception as error:
            unclear.append(f"{parameter}={value!r}: {type(error).__name__}: {error}")
    assert not accepted, "accepted silently: " + "; ".join(accepted)
    assert not unclear, "refused without 'Received:':\n" + "\n".join(unclear)


@pytest.mark.parametrize(
    "call",
    [
        lambda: kcnn.convnet((8,), (2,)),  # one positional argument too many
        lambda: kcnn.convnet((8,), filters=(8,)),  # twice
        lambda: kcnn.resnet((2,), "basic", "v1"),
    ],
    ids=["too-many", "twice", "resnet-too-many"],
)
def test_generic_builders_refuse_positional_misuse_with_what_they_received(call, no_building):
    with pytest.raises(TypeError, match="Received:"):
        call()


def test_valid_edge_values_still_build():
    """The checks take what the builders always took: NumPy scalars, lists for tuples,
    one value or one per stage, None activations, tiny sizes."""
    small = dict(input_shape=(8, 8, 1), classes=np.int64(3))
    model = kcnn.convnet(
        filters=[np.int64(4), 4],
        convs_per_stage=(1, np.int32(2)),
        kernel_size=[3, 1],
        strides=(1, 2),
        padding=["same", "valid"],
        pool=(np.bool_(True), False),
        batch_norm=np.bool_(True),
        stage_dropout=np.float32(0.25),
        hidden_units=[],
        dropout=0,
        classifier_activation=None,
        **small,
    )
    assert [layer.name for layer in model.layers if "conv" in layer.name and layer.name.endswith(("conv1", "conv2"))] == [
        "block1_conv1", "block2_conv1", "block2_conv2",
    ]
    assert model.get_layer("block2_conv1").strides == (2, 2) and model.get_layer("block2_conv1").padding == "valid"
    assert model.get_layer("predictions").activation is keras.activations.linear
    assert kcnn.mlp(hidden_units=(np.int64(4),), activation=None, dropout=0.0, **small).count_params() == 64 * 4 + 4 + 15
    assert kcnn.resnet(stages=[1], block="basic", width=np.int64(4), stem="small", **small).output_shape == (None, 3)
    assert kcnn.vgg(convs_per_stage=1, include_top=False, input_shape=(32, 32, 1), name="v").name == "v"
    widths = (2, 2, 2, 2, 2, 2)
    assert kcnn.googlenet(stages=[[widths]], stem="small", stem_width=4, batch_norm=False, **small).output_shape == (None, 3)
    assert kcnn.alexnet(groups=4, include_top=False, input_shape=(67, 67, 3)).get_layer("conv2").groups == 4
