"""Every builder refuses every invalid argument at its entry, before any layer is built,
with a ValueError or TypeError that says what it received (Keras style); a size too
large to allocate is refused once the layers are laid out, before any weight is.

The fuzz calls each registered builder (`kcnn.registry.MODELS`, through
`create_model` and through its public function) and each generic family builder with
one argument replaced by an invalid value, and `keras.Input` replaced by a function
that fails: a call that gets as far as building the model accepted the value.
`python tests/test_builder_fuzz.py` runs every case, the absurd sizes included, with
the weights laid out but never allocated, and counts how each was answered.
"""

import math
import re
import sys

import keras
import numpy as np
import pytest

import kcnn
from kcnn import registry
from kcnn.models import MAX_INPUT_SIZE, MAX_PARAMS, _base

# Wrong types, zero and negative sizes, empty tuples, bools where ints are expected,
# strings where bools are expected; what is invalid for an argument, by its name.
NOT_POSITIVE_INT = [0, -1, True, False, 2.5, "3", None, (3,), math.nan, np.float64(3.0), np.array(3)]
NOT_FRACTION = [-0.1, 1.0, 1.5, True, "0.5", None, math.nan, math.inf, (0.5,)]
NOT_BOOL = ["yes", "no", "False", 1, 0, 1.0, None, (True,)]
NOT_CHOICE = ["nope", 3, True, None, ("v1",)]
NOT_SIZES = [(), 5, "64", None, (0,), (-1,), (True,), (2.5,), ("8",), ((8,),), (8, None)]
TOO_DEEP = sys.getrecursionlimit() + 1  # more blocks or layers than Keras can map
NOT_HIDDEN_UNITS = [5, "64", None, (0,), (-8,), (True,), (2.5,), ("8",), ((8,),)]
WIDTHS = (8, 8, 8, 8, 8, 8)

BAD = {
    # The builder contract.
    "include_top": NOT_BOOL,
    "weights": [5, True, "imagenet-nonexistent", "weights.h5", "/nonexistent.weights.h5", ("a.keras",)],
    "input_tensor": [5, "x", np.zeros((1, 32, 32, 3)), [None]],
    "input_shape": [(32, 32), (32, 32, 3, 1), (32, 32, 0), (0, 32, 3), (32, -3, 3), (32, 32, 3.0),
                    (32, 32, True), (32, 32, None), "32", 32, (None, None, None), {"a": 1},
                    (MAX_INPUT_SIZE + 1, 32, 3), (2**63, 2**63, 3)],
    # "avg" and "max": pooling belongs to include_top=False, and the default is True.
    "pooling": ["average", "flatten", 5, True, ("avg",), "avg", "max"],
    "classes": [*NOT_POSITIVE_INT, 1],  # 1: a softmax over one class is always 1
    "classifier_activation": ["nope", 5, True, ("softmax",)],
    # TensorFlow cannot scope these: the model would build, then fail in fit or export.
    "name": [5, "", "a/b", True, ("x",), " ", "a b", "a\nb", "modèle", "a:b", "_a"],
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
    "hidden_units": [*NOT_HIDDEN_UNITS, (8,) * TOO_DEEP],
    "filters": [*NOT_SIZES, (8,) * TOO_DEEP],
    # Per stage: one value for every stage, or a sequence of one per stage (convnet's
    # default has 3 stages, VGG 5).
    "convs_per_stage": [*NOT_POSITIVE_INT[:8], *NOT_POSITIVE_INT[9:], (), (2, 2), (2, 2, 2, 2, 2, 2), (0, 2, 2), (2, -1, 2), (2, True, 2),
                        (0, 2, 2, 2, 2), (2, 2, 2, 2, True), TOO_DEEP, 10**9],
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
    "width_multiplier": [0, -0.5, 1.5, True, "0.5", None, math.nan, math.inf, (0.5,), np.array(0.5)],
}
# ResNet's and GoogLeNet's `stages` differ: blocks per stage, or modules' widths per stage.
BAD_STAGES = {
    "resnet": [*NOT_SIZES, (TOO_DEEP,), (1,) * TOO_DEEP, (10**9,)],
    "googlenet": [(), ((),), 5, "abc", None, (WIDTHS,), ((WIDTHS[:5],),), ((WIDTHS + (8,),),), (((8, 8, 8, 8, 8, 0),),),
                  (((8, 8, 8, 8, 8, True),),), (((8, 8, 8, 8, 8, 2.5),),), (((8, 8, 8, 8, 8, "8"),),), ((WIDTHS,), ()),
                  ((WIDTHS,) * TOO_DEEP,)],
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


# Sizes whose weights would take terabytes: each is refused with the parameter count once
# the layers are laid out, before any weight is allocated. (builder, arguments, the one
# argument the message must name)
SMALL_RESNET = dict(stages=(1,), block="basic", stem="small", input_shape=(32, 32, 3))
SMALL_GOOGLENET = dict(stages=((WIDTHS,),), stem="small", input_shape=(32, 32, 3))
ABSURD = [
    ("mlp", {}, dict(classes=10**12)),
    ("mlp", {}, dict(hidden_units=(10**12,))),
    ("mlp", {}, dict(input_shape=(60_000, 60_000, 3))),
    ("convnet", {}, dict(filters=(10**7,))),
    ("convnet", {}, dict(kernel_size=10**6)),
    ("convnet", {}, dict(input_shape=(32, 32, 10**9))),
    ("lenet5", dict(variant="paper"), dict(classes=10**12)),  # its RBF centres are drawn on allocation
    ("alexnet", {}, dict(classes=10**12)),
    ("vgg", dict(convs_per_stage=1), dict(input_shape=(60_000, 60_000, 3))),
    ("resnet", SMALL_RESNET, dict(width=10**6)),
    ("resnet", SMALL_RESNET, dict(classes=10**12)),
    ("googlenet", SMALL_GOOGLENET, dict(stem_width=10**9)),
    ("googlenet", dict(stem="small", input_shape=(32, 32, 3)), dict(stages=(((10**7,) * 6,),))),
]


@pytest.mark.parametrize("family, fixed, absurd", ABSURD, ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_absurd_sizes_are_refused_before_any_weight_is_allocated(family, fixed, absurd):
    [(argument, value)] = absurd.items()
    with pytest.raises(ValueError) as refused:
        getattr(kcnn, family)(**fixed, **absurd)
    message = str(refused.value)
    assert re.search(rf"^`{family}\w*` would have [\d,]+ parameters \([\d,.]+ [GTP]iB of float32 weights\), more than the "
                     rf"{MAX_PARAMS:,} \(8\.0 GiB\) kcnn builds \(kcnn\.models\.MAX_PARAMS\); the largest layers: `\w+` [\d,]+", message)
    assert f"{argument}={value!r}" in message.split("Received: ")[1]


def test_a_model_deeper_than_keras_can_map_is_refused_with_the_recursion_limit():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(250)  # so that a shallow model shows it; 1,000 by default
    try:
        # 240 Dense layers on one path (within the 250 units check_depth lets through): Keras
        # maps them a frame each, above the frames of pytest and of the builder.
        with pytest.raises(ValueError, match=r"^`mlp` is too deep for Keras: .* Python's recursion limit \(250; "
                                             r"sys\.setrecursionlimit raises it\)\. Received: hidden_units=\(4, 4, "):
            kcnn.mlp(hidden_units=(4,) * 240, input_shape=(4, 4, 1))
        with pytest.raises(ValueError, match=r"`hidden_units` asks for 251 hidden layers in all, .* \(250, sys\.getrecursionlimit"):
            kcnn.mlp(hidden_units=(4,) * 251)
    finally:
        sys.setrecursionlimit(limit)


def test_a_named_models_message_names_what_the_caller_gave_and_names_are_lowercase():
    with pytest.raises(ValueError, match=r"^`resnet18` would have .* Received: classes=1000000000000$"):
        registry.create_model("resnet18", classes=10**12)
    with pytest.raises(ValueError, match=r"Model names are lowercase: use 'resnet18'\. Received: name='RESNET18'"):
        registry.create_model("RESNET18")
    with pytest.raises(ValueError, match=r"Did you mean 'resnet18'.* Received: name='ResNet-18'"):
        registry.create_model("ResNet-18")


# ---------------------------------------------------------------------------
# `python tests/test_builder_fuzz.py`: every case above, on every builder, counted. The
# builders run with their weights laid out and never allocated, so an absurd size that
# a builder accepts is counted from its parameter count, not met in the allocator.

# Large values of the right type: each either builds a model within MAX_PARAMS, or is
# refused; accepting one past the bound is the failure counted.
LARGE = [10**12, 2**31, 10**9, 10**6, 100_000]
HUGE = {
    "classes": LARGE,
    "width": LARGE,
    "stem_width": LARGE,
    "hidden_units": [(n,) for n in LARGE],
    "filters": [(n,) for n in LARGE],
    "input_shape": [(10**6, 10**6, 3), (60_000, 60_000, 3), (32, 32, 10**9), (32, 32, 100_000), (2**40, 2**40, 3)],
    "kernel_size": LARGE,
    "strides": LARGE,
    "groups": [2**31, 10**12],
}
HUGE_STAGES = {"resnet": [(10**4,), (500,)], "googlenet": [(((10**6,) * 6,),), (((10**9, 8, 8, 8, 8, 8),),)]}


def fuzz(seconds=60):
    """{(kind, outcome): count} and the cases not refused clearly. Outcomes: "clear" (a
    ValueError or TypeError with "Received:"), "unclear" (another error, or no
    "Received:"), "accepted" (built within MAX_PARAMS), "absurd" (built past it),
    "timeout" (still laying out after `seconds`)."""
    import collections
    import signal

    from kcnn._keras_graph import unallocated_variables

    def timeout(*_):
        raise TimeoutError

    signal.signal(signal.SIGALRM, timeout)
    counts, found = collections.Counter(), collections.defaultdict(list)
    for ident, build, family, parameters in BUILDERS:
        todo = [("invalid", {p: v}) for p, v in cases(family, parameters)]
        for parameter in parameters:
            huge = HUGE_STAGES.get(family, []) if parameter == "stages" else HUGE.get(parameter, [])
            todo += [("large", {parameter: value}) for value in huge]
        for kind, kwargs in todo:
            signal.alarm(seconds)
            try:
                with unallocated_variables():
                    params = build(**kwargs).count_params()
                outcome = "absurd" if params > MAX_PARAMS else "accepted"
            except TimeoutError:
                outcome = "timeout"
            except (ValueError, TypeError) as error:
                outcome = "clear" if "Received:" in str(error) else f"unclear: {type(error).__name__}: {error}"
            except Exception as error:
                outcome = f"unclear: {type(error).__name__}: {error}"
            finally:
                signal.alarm(0)
            counts[kind, outcome.split(":")[0]] += 1
            if outcome != "clear" and not (kind == "large" and outcome == "accepted"):
                found[kind, outcome.split(":")[0]].append(f"{ident} {', '.join(f'{k}={v!r}'[:80] for k, v in kwargs.items())}: {outcome[:200]}")
    return counts, found


if __name__ == "__main__":
    counts, found = fuzz(*map(int, sys.argv[1:2]))
    for key in sorted(counts):
        print(*key, counts[key])
    for key in sorted(found):
        print(f"== {key[0]} {key[1]}: {len(found[key])}")
        print("\n".join(f"   {line}" for line in found[key]))
