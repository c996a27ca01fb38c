"""Every registered model, enumerated from the registry (timm's test_models style)."""

import inspect
import re

import keras
import numpy as np
import pytest

import kcnn
from kcnn import catalog, registry
from kcnn.models._base import spec_table

ALL_MODELS = kcnn.list_models()
# ResNet-101 and -152 are ResNet-50 with longer third and fourth stages (the same
# builder, blocks and code paths; only the stage table differs), and their architecture
# is pinned by the exact parameter counts of kcnn.catalog. The tests that build several copies of
# each model, or save and reload it, run on ResNet-50 for them: a ResNet-152 costs
# 20-30 s per such test on two cores.
DEEP_TWINS = {"resnet101", "resnet152"}
# The FCNs hold VGG-16's 134 M parameters (a 540 MB .keras file) at any input size, and
# their smallest forward pass convolves a 199x199 map (conv1 is padded by 100):
# tests/test_dense.py builds and runs each once, and round-trips FCN-8s, in
# module-scoped fixtures; here they are checked without building them.
FCNS = {"fcn8s", "fcn16s", "fcn32s"}
BUILT_MODELS = [name for name in ALL_MODELS if name not in DEEP_TWINS | FCNS]
CLASSIFIERS = [name for name in BUILT_MODELS if registry.get_spec(name).task == "classification"]

# design.md section 3, by (registry name, builder arguments). The figures are checked
# against kcnn.catalog's pinned rows, which tests/test_catalog.py checks against the
# models as built (once each), so they stay pinned without building the models again.
# Keras count_params() (trainable + BatchNorm moving statistics):
PARAMS = {
    ("lenet5", ()): 61_706,
    ("alexnet", ()): 60_965_224,
    ("vgg16", ()): 138_357_544,
    ("vgg19", ()): 143_667_240,
    ("googlenet", ()): 6_998_552,
    ("googlenet", (("aux_logits", True),)): 13_378_280,
    ("resnet50", ()): 25_636_712,
    ("resnet101", ()): 44_707_176,
    ("resnet152", ()): 60_419_944,
}
# Trainable-only counts, where the reference library (torchvision) counts only those.
TRAINABLE = {
    ("vgg16_bn", ()): 138_365_992,
    ("lenet5", (("variant", "paper"),)): 60_000,
    ("resnet18", (("variant", "v1.5"),)): 11_689_512,
    ("resnet34", (("variant", "v1.5"),)): 21_797_672,
    ("resnet50", (("variant", "v1.5"),)): 25_557_032,
    ("resnet101", (("variant", "v1.5"),)): 44_549_160,
    ("resnet152", (("variant", "v1.5"),)): 60_192_808,
}
# Multiply-accumulates at the default input, in G, as design.md rounds them.
GMACS = {
    ("resnet50", ()): 3.86,
    ("resnet50", (("variant", "v1.5"),)): 4.09,
    ("vgg16", ()): 15.47,
    ("alexnet", ()): 0.72,
    ("googlenet", ()): 1.58,
}


def catalog_row(name, arguments):
    rows = [row for row in catalog.ROWS if row.name == name and dict(row.arguments) == dict(arguments)]
    assert len(rows) == 1, f"kcnn.catalog has {len(rows)} rows for {name}{dict(arguments)}"
    return rows[0]


def small_shape(name):
    spec = registry.get_spec(name)
    size = max(registry.min_input_size(name), 32) if spec.family != "alexnet" else registry.min_input_size(name)
    return (size, size, spec.default_input_shape[2])


@pytest.mark.parametrize("name,arguments", sorted(PARAMS, key=str))
def test_parameter_count_matches_the_reference(name, arguments):
    assert catalog_row(name, arguments).params == PARAMS[(name, arguments)]


@pytest.mark.parametrize("name,arguments", sorted(TRAINABLE, key=str))
def test_trainable_parameter_count_matches_the_reference(name, arguments):
    assert catalog_row(name, arguments).trainable_params == TRAINABLE[(name, arguments)]


@pytest.mark.parametrize("name,arguments", sorted(GMACS, key=str))
def test_macs_match_the_reference(name, arguments):
    assert round(catalog_row(name, arguments).macs / 1e9, 2) == GMACS[(name, arguments)]


def test_googlenet_auxiliary_heads_on_4a_and_4d():
    model = kcnn.googlenet(aux_logits=True)
    assert [tuple(output.shape) for output in model.outputs] == [(None, 1000)] * 3
    assert model.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]
    # aux1 reads inception4a's output, aux2 inception4d's: 5x5/3 pooling of 14x14 -> 4x4.
    for aux, module in (("aux1", "inception4a"), ("aux2", "inception4d")):
        pool = model.get_layer(f"{aux}_pool")
        assert pool.input is model.get_layer(f"{module}_concat").output
        assert pool.output.shape[1:3] == (4, 4)
    assert not any(layer.name.startswith("aux") for layer in kcnn.googlenet(input_shape=(32, 32, 3)).layers)


def test_list_models_lists_every_family():
    assert kcnn.list_models("resnet*") == ["resnet101", "resnet152", "resnet18", "resnet34", "resnet50"]
    assert set(ALL_MODELS) == {
        "mlp", "convnet", "lenet5", "alexnet", "googlenet",
        *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
        "fcn8s", "fcn16s", "fcn32s", "unet",
    }
    with pytest.raises(TypeError):
        registry.MODELS["mine"] = None


def test_every_spec_says_what_its_model_predicts():
    """`task` is the one place that says it: the training side reads it."""
    tasks = {name: registry.get_spec(name).task for name in ALL_MODELS}
    segmentation = {"fcn8s", "fcn16s", "fcn32s", "unet"}
    assert tasks == {name: "segmentation" if name in segmentation else "classification" for name in ALL_MODELS}
    with pytest.raises(ValueError, match=r"`task` must be one of 'classification', 'segmentation'\. Received: task='detection'"):
        spec_table(family="x", builder=kcnn.lenet5, year=1, paper="", default_input_shape=(1, 1, 1), rows={}, task="detection")


def expected_output_shape(name, batch, shape, classes):
    """A class vector per image, or per pixel at the input's size for segmentation."""
    if registry.get_spec(name).task == "segmentation":
        return (batch, *shape[:2], classes)
    return (batch, classes)


@pytest.mark.parametrize("name", BUILT_MODELS)
def test_model_builds_runs_has_valid_names_and_round_trips(name, tmp_path, rng):
    shape = small_shape(name)
    model = kcnn.create_model(name, input_shape=shape, classes=7)
    assert model.name == name
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9_]+", layer_name) for layer_name in names), names
    x = rng.uniform(size=(2, *shape)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == expected_output_shape(name, 2, shape, 7)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # safe_mode: no lambdas, custom layers registered
    assert restored.name == name
    np.testing.assert_allclose(np.asarray(restored(x, training=False)), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_include_top_false_pooling_behaves_as_named(name, rng):
    shape = small_shape(name)
    features = kcnn.create_model(name, include_top=False, input_shape=shape)
    assert not any(layer.name.endswith("predictions") for layer in features.layers)
    x = rng.uniform(size=(2, *shape)).astype("float32")
    feature_map = np.asarray(features(x, training=False))
    assert feature_map.ndim == 4
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        pooled = kcnn.create_model(name, include_top=False, input_shape=shape, pooling=pooling)
        pooled.set_weights(features.get_weights())
        assert pooled.layers[-1].name == f"{pooling}_pool"
        np.testing.assert_allclose(
            np.asarray(pooled(x, training=False)), reduce(feature_map, axis=(1, 2)), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_too_small_input_is_refused_with_the_smallest_size(name):
    smallest = registry.min_input_size(name)
    channels = registry.get_spec(name).default_input_shape[2]
    # The smallest size builds (fully convolutional part, so no top constraint) ...
    kcnn.create_model(name, include_top=False, input_shape=(smallest, smallest, channels))
    if smallest == 1:
        return  # padding keeps every size valid (ResNet, GoogLeNet, MLP): nothing to refuse
    with pytest.raises(ValueError, match=rf"at least {smallest}x{smallest} pixels\. Received: input_shape=\({smallest - 1}, {smallest - 1}, {channels}\)"):
        kcnn.create_model(name, input_shape=(smallest - 1, smallest - 1, channels))


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "convnet"])
def test_fully_convolutional_families_accept_unknown_sizes(name, rng):
    model = kcnn.create_model(name, include_top=False, input_shape=(None, None, 3), pooling="avg")
    for size in (33, 48):
        assert np.asarray(model(rng.uniform(size=(1, size, size, 3)).astype("float32"))).shape[0] == 1


def test_input_tensor_is_used_as_the_input():
    inputs = keras.Input((40, 40, 3))
    model = kcnn.resnet18(input_tensor=inputs, classes=3)
    assert model.inputs[0] is inputs
    assert model.output_shape == (None, 3)


def test_lenet5_defaults_and_paper_variant():
    modern = kcnn.lenet5()
    assert modern.input_shape == (None, 32, 32, 1) and modern.output_shape == (None, 10)
    paper = kcnn.lenet5(variant="paper")
    assert paper.get_layer("conv3").count_params() == 1516
    assert paper.get_layer("pool2").count_params() == 12
    assert [w.name for w in paper.non_trainable_weights] == ["centres"]


def test_alexnet_is_the_two_gpu_net():
    model = kcnn.alexnet()
    assert model.input_shape == (None, 227, 227, 3)
    assert [model.get_layer(f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert model.get_layer("pool5").output.shape[1:] == (6, 6, 256)
    assert {type(model.get_layer(n)).__name__ for n in ("norm1", "norm2")} == {"LocalResponseNormalization"}


def test_resnet_generic_custom_depth_and_small_stem():
    model = kcnn.resnet(stages=(1, 1, 1), block="basic", width=16, stem="small", input_shape=(32, 32, 3), classes=10)
    assert model.get_layer("conv4_block1_out").output.shape[1:] == (8, 8, 64)
    assert model.name == "resnet"


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: kcnn.create_model("resnet51"), r"Did you mean 'resnet50'.*Received: name='resnet51'"),
        (lambda: kcnn.resnet50(variant="v2"), r"Received: variant='v2'"),
        (lambda: kcnn.lenet5(variant="v3"), r"Received: variant='v3'"),
        (lambda: kcnn.resnet18(include_top=False, pooling="mean"), r"Received: pooling='mean'"),
        (lambda: kcnn.resnet18(input_shape=(32.5, 32, 3)), r"positive integers.*Received: input_shape=\(32.5, 32, 3\)"),
        (lambda: kcnn.resnet18(input_shape=(32, 32)), r"Received: input_shape=\(32, 32\)"),
        (lambda: kcnn.resnet18(classes=0), r"Received: classes=0"),
        (lambda: kcnn.resnet18(classes=2.5), r"Received: classes=2.5"),
        (lambda: kcnn.vgg16(input_shape=(None, None, 3)), r"Received: input_shape=\(None, None, 3\)"),
        (lambda: kcnn.resnet18(variant="v1", weights="imagenet"), r"resnet18.tv_in1k are for variant='v1.5'.*Received: variant='v1'"),
        (lambda: kcnn.lenet5(weights="imagenet"), r"No pretrained weights are known for `lenet5`"),
        (lambda: kcnn.resnet18(weights=3), r"`.weights.h5`, `.keras`.*Received: weights=3"),
        (lambda: kcnn.resnet18(weights="/nonexistent.keras"), r"does not exist"),
        (lambda: kcnn.resnet(stages=(), block="basic"), r"Received: stages=\(\)"),
        (lambda: kcnn.resnet(block="bottle"), r"Received: block='bottle'"),
        # Once accepted silently: a ConvNet without convolutions, "yes" taken as True,
        # a string aux_logits reported as an input too small.
        (lambda: kcnn.convnet(convs_per_stage=0), r"`convs_per_stage` must be a positive integer\. Received: convs_per_stage=0$"),
        (lambda: kcnn.convnet(batch_norm="yes"), r"`batch_norm` must be True or False\. Received: batch_norm='yes'$"),
        (lambda: kcnn.googlenet(aux_logits="yes"), r"`aux_logits` must be True or False\. Received: aux_logits='yes'$"),
        (lambda: kcnn.vgg(convs_per_stage=(2, 2)), r"one per stage \(5\)\. Received: convs_per_stage=\(2, 2\)$"),
        (lambda: kcnn.convnet(pool=(True, "no", True)), r"True or False in each stage\. Received: pool=\(True, 'no', True\)$"),
        (lambda: kcnn.alexnet(groups=3), r"one of \[1, 2, 4, 8, 16, 32\]\. Received: groups=3$"),
        (lambda: kcnn.resnet(stages=(True, 2)), r"Received: stages=\(True, 2\)$"),
        (lambda: kcnn.mlp(dropout=1.0), r"`dropout` must be a number in \[0, 1\)\. Received: dropout=1.0$"),
        (lambda: kcnn.lenet5(classifier_activation="softmx"), r"Received: classifier_activation='softmx'$"),
    ],
)
def test_bad_arguments_say_what_was_expected_and_received(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_lazy_public_api_lists_every_builder():
    import kcnn.models

    assert set(kcnn.__all__) >= set(kcnn.models.__all__)
    assert all(callable(getattr(kcnn, name)) for name in kcnn.__all__ if name != "MODELS")
    with pytest.raises(AttributeError):
        kcnn.resnet51  # noqa: B018


def test_googlenet_takes_another_table_and_a_small_stem():
    widths = (8, 8, 16, 4, 8, 8)
    model = kcnn.googlenet(stages=((widths,), (widths, widths)), stem="small", stem_width=16, batch_norm=True, input_shape=(32, 32, 3), classes=10)
    assert model.get_layer("inception4b_concat").output.shape[1:] == (16, 16, 40)
    assert model.get_layer("pool3").output.shape[1:3] == (16, 16)
    assert model.get_layer("conv1").kernel_size == (3, 3) and "norm1" not in {layer.name for layer in model.layers}
    assert model.get_layer("inception3a_1x1_bn")
    with pytest.raises(ValueError, match="modules 4a and 4d"):
        kcnn.googlenet(stages=((widths,), (widths,)), aux_logits=True)
    with pytest.raises(ValueError, match="Received: stem='tiny'"):
        kcnn.googlenet(stem="tiny")


VGG_BN = [name for name in ALL_MODELS if name.startswith("vgg") and name.endswith("_bn")]


@pytest.mark.parametrize("name", VGG_BN)
def test_vgg_bn_uses_torchvision_batch_norm_epsilon(name):
    # torchvision's BatchNorm2d default; its VGG-BN weights agree to 2e-6 with it.
    trunk = kcnn.create_model(name, include_top=False, input_shape=(32, 32, 3))
    epsilons = {layer.name: layer.epsilon for layer in trunk.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert len(epsilons) == sum(registry.get_spec(name).arguments["convs_per_stage"])
    assert set(epsilons.values()) == {1e-5}, epsilons


def torchvision_vgg_block(x, kernel, bias, gamma, beta, mean, variance):
    """torchvision's VGG `features` block in NumPy: Conv2d(3x3, padding=1) + bias,
    BatchNorm2d in eval mode (epsilon 1e-5), ReLU, MaxPool2d(2)."""
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.stack([padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)], axis=3)
    y = np.einsum("nhwkc,kcf->nhwf", patches, kernel.reshape(9, *kernel.shape[2:])) + bias
    y = (y - mean) / np.sqrt(variance + 1e-5) * gamma + beta
    y = np.maximum(y, 0)
    return y.reshape(y.shape[0], height // 2, 2, width // 2, 2, -1).max(axis=(2, 4))


def test_vgg11_bn_first_block_is_torchvisions(rng):
    model = kcnn.vgg11_bn(include_top=False, input_shape=(32, 32, 3))
    block = keras.Model(model.input, model.get_layer("block1_pool").output)
    kernel = rng.normal(scale=0.3, size=(3, 3, 3, 64))
    bias = rng.normal(scale=0.1, size=64)
    # Small variances make the epsilon matter: 1e-3 instead of 1e-5 moves outputs by up to 2.5%.
    gamma, beta, mean = rng.normal(1.0, 0.2, 64), rng.normal(0.0, 0.2, 64), rng.normal(0.0, 0.2, 64)
    variance = rng.uniform(0.02, 0.1, 64)
    model.get_layer("block1_conv1").set_weights([kernel.astype("float32"), bias.astype("float32")])
    model.get_layer("block1_conv1_bn").set_weights([w.astype("float32") for w in (gamma, beta, mean, variance)])
    x = rng.normal(size=(2, 32, 32, 3))
    expected = torchvision_vgg_block(x, kernel, bias, gamma, beta, mean, variance)
    actual = np.asarray(block(x.astype("float32"), training=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


CONTRACT = ["include_top", "weights", "input_tensor", "input_shape", "pooling", "classes", "classifier_activation", "name"]
# A segmentation model's (kcnn.dense): no top to leave out, no pooling; `weights` are its backbone's.
SEGMENTATION_CONTRACT = ["classes", "input_shape", "weights", "classifier_activation", "name"]


# The models that are rows of a family table (resnet50 = resnet(stages=..., block=...));
# the others (alexnet, convnet, ...) are their family's builder itself.
GENERATED = [name for name in ALL_MODELS if registry.get_spec(name).arguments]


@pytest.mark.parametrize("name", GENERATED)
def test_named_builders_show_their_own_keyword_only_signature(name):
    spec = registry.get_spec(name)
    family = inspect.signature(spec.builder).parameters
    signature = inspect.signature(getattr(kcnn, name))
    assert list(signature.parameters) == [key for key in family if key not in spec.arguments]
    assert {p.kind for p in signature.parameters.values()} == {inspect.Parameter.KEYWORD_ONLY}
    contract = CONTRACT if spec.task == "classification" else SEGMENTATION_CONTRACT
    assert list(signature.parameters)[-len(contract) :] == contract
    assert signature.parameters["name"].default == name
    for key, parameter in signature.parameters.items():
        if key != "name":
            assert parameter.default == family[key].default


def test_resnet50_and_vgg16_bn_signatures():
    assert str(inspect.signature(kcnn.resnet50)).startswith("(*, width=64, variant='v1', stem='imagenet', output_stride=None, include_top=True,")
    assert list(inspect.signature(kcnn.vgg16_bn).parameters)[:1] == ["dropout"]
    assert "Takes the keyword arguments of `kcnn.models.resnet` but `stages`, `block`" in kcnn.resnet50.__doc__


@pytest.mark.parametrize("build", [kcnn.resnet50, lambda **kwargs: kcnn.create_model("resnet50", **kwargs)])
def test_named_builders_refuse_fixed_unknown_and_positional_arguments(build):
    with pytest.raises(TypeError, match=r"`resnet50` fixes `stages` to \(3, 4, 6, 3\).*`kcnn.resnet\(stages=...\)`. Received: stages=\(1, 1, 1, 1\)$"):
        build(stages=(1, 1, 1, 1))
    with pytest.raises(TypeError, match=r"fixes `batch_norm`.*Received: batch_norm=False$"):
        kcnn.create_model("vgg16_bn", batch_norm=False)
    with pytest.raises(TypeError, match=r"`resnet50` has no argument `widht`. Did you mean `width`.*Received: widht=32$"):
        build(widht=32)
    with pytest.raises(TypeError, match=r"`resnet50` takes keyword arguments only. Received: 1 positional argument\(s\) \(1, 1, 1, 1\)$"):
        kcnn.resnet50((1, 1, 1, 1))


def test_create_model_takes_name_positionally_so_the_model_can_be_named():
    assert inspect.signature(kcnn.create_model).parameters["name"].kind is inspect.Parameter.POSITIONAL_ONLY
    assert kcnn.create_model("resnet18", name="mine", include_top=False, input_shape=(32, 32, 3)).name == "mine"
    assert kcnn.resnet18(name=None, include_top=False, input_shape=(32, 32, 3)).name == "resnet18"
    assert registry.min_input_size("lenet5", name="mine") == 32


def test_family_builders_refuse_unknown_arguments_by_name():
    with pytest.raises(TypeError, match=r"`resnet` has no argument `depth`.*Received: depth=50$"):
        kcnn.resnet(depth=50)


def dropouts(model):
    return [(layer.name, layer.rate) for layer in model.layers if isinstance(layer, keras.layers.Dropout)]


@pytest.mark.parametrize(
    "build,expected",
    [
        (lambda: kcnn.mlp(hidden_units=(8,), dropout=0.25), [("fc1_dropout", 0.25)]),
        (lambda: kcnn.mlp(dropout=0.25), [("dropout", 0.25)]),
        (
            lambda: kcnn.convnet(filters=(4, 4), hidden_units=(8,), dropout=0.25, stage_dropout=0.1),
            [("block1_dropout", 0.1), ("block2_dropout", 0.1), ("fc1_dropout", 0.25)],
        ),
        (lambda: kcnn.convnet(filters=(4,), hidden_units=(), dropout=0.25), [("dropout", 0.25)]),
        (lambda: kcnn.alexnet(dropout=0.25, input_shape=(67, 67, 3)), [("fc6_dropout", 0.25), ("fc7_dropout", 0.25)]),
        (lambda: kcnn.vgg11(dropout=0.25, input_shape=(32, 32, 3)), [("fc1_dropout", 0.25), ("fc2_dropout", 0.25)]),
        (lambda: kcnn.googlenet(dropout=0.25, input_shape=(32, 32, 3)), [("dropout", 0.25)]),
    ],
    ids=["mlp-hidden", "mlp-linear", "convnet-hidden", "convnet-none", "alexnet", "vgg11", "googlenet"],
)
def test_dropout_is_the_classifiers_in_every_family(build, expected):
    """`dropout` follows each hidden fully connected layer, or precedes the classifier
    where there are none; nothing else (convnet's stages have `stage_dropout`)."""
    model = build()
    assert dropouts(model) == expected
    last = model.get_layer(expected[-1][0])
    assert model.get_layer("predictions").input is last.output


@pytest.mark.parametrize(
    "old,value,new",
    [("dense_units", (128,), "hidden_units"), ("head_dropout", 0.5, "dropout")],
)
def test_convnets_old_argument_names_fail_naming_the_new_ones(old, value, new):
    message = rf"`{old}` is now `{new}`.*Received: {old}={re.escape(repr(value))}$"
    with pytest.raises(TypeError, match=message):
        kcnn.convnet(**{old: value})
    with pytest.raises(TypeError, match=message):
        kcnn.create_model("convnet", **{old: value})


def test_a_trunk_that_empties_the_map_is_refused_with_the_smallest_size():
    """Keras' own layers raise before a map shrinks to 0x0; a custom one (LeNet's
    subsampling) returns it, so the builder checks what its trunk produced."""
    from kcnn.layers import Subsampling2D
    from kcnn.models._base import Network, builder

    @builder(default_input_shape=(1, 1, 3))
    def subsampled():
        return Network(lambda x: Subsampling2D(2, name="pool")(x), lambda x, classes, activation: x)

    with pytest.raises(ValueError, match=r"`subsampled`: its layers need at least 2x2 pixels\. Received: input_shape=\(1, 1, 3\)"):
        subsampled(include_top=False)
    assert subsampled(include_top=False, input_shape=(2, 2, 3)).output_shape == (None, 1, 1, 3)


def test_googlenet_is_keyword_only_and_its_minimum_input_counts_the_auxiliary_heads():
    # Issue 27: `stages` was positional, and the registry's minimum ignored the
    # auxiliary heads (1, where the builder refuses anything below 65).
    assert {parameter.kind for parameter in inspect.signature(kcnn.googlenet).parameters.values()} == {inspect.Parameter.KEYWORD_ONLY}
    with pytest.raises(TypeError, match=r"`googlenet` takes keyword arguments only"):
        kcnn.googlenet((((64, 96, 128, 16, 32, 32),),))
    assert registry.min_input_size("googlenet") == 1
    assert registry.min_input_size("googlenet", aux_logits=True, classes=10) == 65
    with pytest.raises(ValueError, match=r"too small for `googlenet`: its layers need at least 65x65 pixels"):
        kcnn.googlenet(aux_logits=True, input_shape=(64, 64, 3))
