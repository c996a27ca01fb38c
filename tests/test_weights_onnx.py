"""BVLC AlexNet and GoogLeNet from the ONNX Model Zoo's exports, proven against
onnxruntime without committing a weight file: tests/fixtures/make_onnx_fixtures.py ran
graphs of the zoo files' structure (tests/fixtures/onnx_graphs.py) with seeded random
weights in onnxruntime; these tests rebuild the same graphs from the seed, write them
as `.onnx` files, load them into kcnn and compare logits."""

import json
import pathlib

import numpy as np
import onnxruntime
import pytest
from fixtures import onnx_graphs
from onnx import TensorProto, helper

import kcnn
from kcnn.layers import LocalResponseNormalization
from kcnn.weights import convert, formats, store, table

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
PARITY = json.loads((FIXTURES / "onnx_parity.json").read_text())["cases"]


def _zoo_file(folder, graph, name):
    path = folder / name
    path.write_bytes(graph.SerializeToString())
    return path


def _compare(model, name, nchw=False):
    case = PARITY[name]
    images = onnx_graphs.images(case["images"], case["size"], case["seed"]).transpose(0, 2, 3, 1)
    output = np.asarray(model(images, training=False))
    reference = np.load(FIXTURES / "onnx_parity.npz")[name]
    if nchw:
        reference = reference.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_bvlc_alexnet_logits_equal_onnxruntimes(tmp_path):
    # The whole network (61M weights) at the zoo file's 224: pool1 and pool2 round down,
    # pool5 is padded, fc6 reads C,H,W. Named as `kcnn weights list` names the set, the
    # file makes the builder take variant="caffe" itself.
    path = _zoo_file(tmp_path, onnx_graphs.alexnet(0, 224), "alexnet.bvlc_in1k.onnx")
    model = kcnn.alexnet(weights=path, input_shape=(224, 224, 3), classifier_activation=None)
    assert kcnn.weights.weight_set_of(model).name == "alexnet.bvlc_in1k"
    assert model.get_layer("norm1").get_config()["k"] == 1.0 and model.get_layer("pool5").output.shape[1:3] == (6, 6)
    _compare(model, "alexnet_224")
    # At Caffe's own 227 (its trunk: no window reaches pool5's padding there).
    path = _zoo_file(tmp_path, onnx_graphs.alexnet(1, 227, top=False), "trunk.onnx")
    trunk = kcnn.alexnet(variant="caffe", include_top=False, input_shape=(227, 227, 3), weights=path)
    _compare(trunk, "alexnet_227_pool5", nchw=True)


def test_bvlc_googlenet_logits_equal_onnxruntimes_whatever_the_names_and_node_order(tmp_path):
    """The mapping follows the graph: initializers renamed and nodes listed in another
    valid order give the same logits; another structure is refused."""
    graph = onnx_graphs.reorder(onnx_graphs.googlenet(0))
    renames = {tensor.name: f"t{i}" for i, tensor in enumerate(graph.graph.initializer)}
    for tensor in graph.graph.initializer:
        tensor.name = renames[tensor.name]
    for node in graph.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    assert [node.name for node in graph.graph.node][10:14] == ["inception_3a/pool_1", "inception_3a/pool_proj_1", "inception_3a/pool_proj_2", "inception_3a/5x5_reduce_1"]
    path = _zoo_file(tmp_path, graph, "bvlc_googlenet.onnx")
    model = kcnn.googlenet(variant="caffe", weights=path, classifier_activation=None)
    _compare(model, "googlenet_224")
    # The paper variant pads conv1 (2, 3) where the file pads 3: refused, with the way out.
    with pytest.raises(convert.WeightMapError, match=r"bvlc_googlenet\.onnx does not fit `googlenet`: The graphs differ at layer `conv1` \(the BVLC files load into variant='caffe'\)"):
        kcnn.googlenet(weights=path, include_top=False)
    with pytest.raises(convert.WeightMapError, match=r"the file has no auxiliary heads: build with aux_logits=False"):
        kcnn.googlenet(variant="caffe", aux_logits=True, weights=path)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(formats.WeightFileError, match=r"cut\.onnx is truncated, damaged or no ONNX model"):
        kcnn.googlenet(variant="caffe", weights=cut, include_top=False)
    lrn = next(node for node in graph.graph.node if node.op_type == "LRN")
    next(attribute for attribute in lrn.attribute if attribute.name == "alpha").f = 2e-4
    path.write_bytes(graph.SerializeToString())
    with pytest.raises(convert.WeightMapError, match=r"The graphs differ at layer `norm1` \(the BVLC files load into variant='caffe'\): the file's ONNX node 'pool1/norm1_1' \(LRN\) is a lrn with \{'size': 5, 'alpha': 4e-05"):
        kcnn.googlenet(variant="caffe", weights=path, include_top=False)


def _lrn_reference(x, size, alpha, beta, bias):
    """Caffe's and ONNX's LRN over the channel axis (last): the sum of squares over the
    `size` channels centred on each (clipped at the edges), scaled by alpha / size."""
    half = (size - 1) // 2
    squared = np.pad(x.astype(np.float64) ** 2, [(0, 0)] * (x.ndim - 1) + [(half, size - 1 - half)])
    window = sum(squared[..., i : i + x.shape[-1]] for i in range(size))
    return x / (bias + alpha / size * window) ** beta


@pytest.mark.parametrize("size,alpha,beta,bias", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0)])
def test_caffe_lrn_is_onnxs_lrn(size, alpha, beta, bias):
    x = np.random.default_rng(size).uniform(-150, 150, (2, 3, 4, 7)).astype(np.float32)  # NCHW, 7 channels
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    onnx_output = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    nhwc = x.transpose(0, 2, 3, 1)
    reference = _lrn_reference(nhwc, size, alpha, beta, bias)
    kcnn_output = np.asarray(LocalResponseNormalization.caffe(size, alpha, beta, bias)(nhwc))
    np.testing.assert_allclose(onnx_output.transpose(0, 2, 3, 1), reference, rtol=2e-5)
    np.testing.assert_allclose(kcnn_output, reference, rtol=2e-5)
    assert np.abs(reference - nhwc).max() > 1  # far from the identity: the constants matter
    # The paper's convention (kcnn's default layer) scales the sum by alpha itself.
    paper = np.asarray(LocalResponseNormalization(depth=size, k=bias, alpha=alpha, beta=beta)(nhwc))
    np.testing.assert_allclose(paper, _lrn_reference(nhwc, size, alpha * size, beta, bias), rtol=2e-5)


def test_the_bvlc_rows_download_checked_and_offline_fail_fast(tmp_path, monkeypatch):
    rows = {row.model: row for row in table.list_weights("*.bvlc_in1k")}
    assert table.default_weight_set("alexnet") is rows["alexnet"] and table.default_weight_set("googlenet") is rows["googlenet"]
    assert rows["alexnet"].variant == {"variant": "caffe"} and rows["alexnet"].hash.startswith("sha256:6b0da951")
    # Offline (the suite sets KCNN_OFFLINE): the URL, the file name and where to put it,
    # before any model is built.
    monkeypatch.setattr(kcnn.models._base, "build_model", lambda **k: pytest.fail("built before fetching"))
    with pytest.raises(store.WeightsUnavailableError) as raised:
        kcnn.alexnet(weights="imagenet")
    message = str(raised.value)
    assert rows["alexnet"].url in message and str(store.cache_dir() / "alexnet.bvlc_in1k.onnx") in message
    assert "file name alexnet.bvlc_in1k.onnx" in message
    # A cached file with another hash is refused, never loaded.
    monkeypatch.undo()
    cached = store.cache_dir() / "googlenet.bvlc_in1k.onnx"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"not the zoo's file")
    try:
        with pytest.raises(store.HashMismatchError, match=r"googlenet\.bvlc_in1k\.onnx has sha256 [0-9a-f]{64}, the weights table c99c5070"):
            kcnn.googlenet(weights="imagenet")
    finally:
        cached.unlink()
