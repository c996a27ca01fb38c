"""torchvision/timm `.safetensors` -> kcnn, proven against PyTorch without PyTorch:
tests/fixtures/make_torch_fixtures.py recorded PyTorch's logits for seeded random
weights (`fixtures/torch_weights.py`), which these tests regenerate with NumPy, write
as a safetensors file and load into the kcnn model; and it recorded the tensor list of
every timm architecture the weights table names, which the mapping must cover."""

import json
import pathlib

import numpy as np
import pytest
from fixtures import torch_weights
from safetensors.numpy import save_file

import kcnn
from kcnn.weights import convert, table

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"

PARITY = json.loads((FIXTURES / "torch_parity.json").read_text())
MANIFESTS = json.loads((FIXTURES / "torch_manifests.json").read_text())


def _builder_arguments(name):
    return {"variant": "v1.5"} if name.startswith("resnet") else {}


@pytest.mark.parametrize("name", sorted(PARITY["cases"]))
def test_torchvision_logits_are_reproduced_from_a_safetensors_file(name, tmp_path):
    case = PARITY["cases"][name]
    path = tmp_path / f"{name}.safetensors"
    save_file(torch_weights.random_tensors(case["entries"], seed=case["seed"]), path)
    size = case["size"]
    model = kcnn.create_model(
        name, input_shape=(size, size, 3), classifier_activation=None, weights=path, **_builder_arguments(name)
    )
    expected = np.load(FIXTURES / "torch_parity.npz")
    logits = np.asarray(model(expected["input"], training=False))
    reference = expected[name]
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def _zeros(entries):
    # Zero-stride arrays: the shapes of a 500 MB file at no memory.
    return {name: np.broadcast_to(np.zeros((), np.float32), shape) for name, shape, _ in entries}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_every_tensor_of_the_hub_files_has_its_place_in_kcnn(name):
    """Each timm architecture of the weights table: every tensor maps, and onto a kcnn
    weight of the same shape (the model is built small where shapes allow)."""
    assert any(row.model == name and row.format == "safetensors" for row in table.WEIGHTS)
    vgg = name.startswith("vgg")
    # ResNet shapes do not depend on the input size; VGG's convolutions neither (the
    # top, whose fc1 does, is checked below at 224 through the 7x7 map).
    model = kcnn.create_model(name, input_shape=(32, 32, 3), include_top=not vgg, **_builder_arguments(name))
    convs = [layer.name for layer in model.layers if layer.name.startswith("block") and layer.weights and "_bn" not in layer.name]
    values = convert.from_torch(_zeros(MANIFESTS[name]), family="vgg" if vgg else "resnet", conv_layers=convs)
    targets = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights}
    if vgg:
        assert {key: [v.shape for v in values.pop(key)] for key in ("fc1", "fc2", "predictions")} == {
            "fc1": [(7 * 7 * 512, 4096), (4096,)], "fc2": [(4096, 4096), (4096,)], "predictions": [(4096, 1000), (1000,)],
        }
    assert {key: [tuple(v.shape) for v in value] for key, value in values.items()} == targets


def test_vgg_first_dense_layer_is_permuted_alike_from_both_layouts():
    # torchvision keeps fc1 as (4096, 25088) in C,H,W order; timm as a 7x7
    # convolution (4096, 512, 7, 7): both must give the kernel Keras' H,W,C Flatten reads.
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(5, 4, 3, 2)).astype(np.float32)  # (O, C, H, W)
    bias = np.zeros(5, np.float32)
    from_4d = convert._flatten_dense({"weight": weight, "bias": bias}, (3, 2, 4))
    from_2d = convert._flatten_dense({"weight": weight.reshape(5, -1), "bias": bias}, (3, 2, 4))
    np.testing.assert_array_equal(from_4d[0], from_2d[0])
    x_chw = rng.normal(size=(4, 3, 2)).astype(np.float32)
    torch_output = weight.reshape(5, -1) @ x_chw.ravel()
    keras_output = x_chw.transpose(1, 2, 0).ravel() @ from_4d[0]
    np.testing.assert_allclose(keras_output, torch_output, rtol=1e-5)


def test_a_tensor_without_a_place_is_an_error():
    # A squeeze-and-excitation ResNet's extra convolution: no kcnn ResNet has one.
    entries = MANIFESTS["resnet18"] + [("layer1.0.se.fc1.weight", [4, 64, 1, 1], "float32")]
    with pytest.raises(convert.WeightMapError, match=r"1 tensors of the file have no place.*layer1\.0\.se\.fc1\.weight"):
        convert.from_torch(_zeros(entries), family="resnet")


def test_a_deeper_networks_file_is_refused(tmp_path):
    path = tmp_path / "resnet34.safetensors"
    save_file(torch_weights.random_tensors(MANIFESTS["resnet34"]), path)
    with pytest.raises(ValueError, match=r"holds layers `resnet18` does not have, e\.g\. \['conv2_block3_1_bn'"):
        kcnn.resnet18(variant="v1.5", input_shape=(32, 32, 3), weights=path)


def test_a_torchvision_file_into_a_v1_resnet_names_the_variant(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(torch_weights.random_tensors(MANIFESTS["resnet18"]), path)
    with pytest.raises(ValueError, match=r"have no biases: it is for variant='v1\.5'"):
        kcnn.resnet18(input_shape=(32, 32, 3), weights=path)
