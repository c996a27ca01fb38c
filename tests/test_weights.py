import dataclasses
import hashlib
import json
import os
import pathlib
import struct

import h5py
import keras
import numpy as np
import pytest
from fixtures import torch_weights
from fixtures.local_weights import save_keras2_h5
from safetensors.numpy import save_file

import kcnn
from kcnn.weights import convert, formats, load_weights, store, table, transfer_weights


def randomize_batchnorm_statistics(model, rng):
    # Fresh BatchNorm layers are the identity at inference; random statistics make the
    # comparison check that they are carried over too.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(scale=0.1, size=channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=channels).astype("float32"))


# (keras.applications constructor, kcnn builder, input shape, include_top): top and
# no-top files of keras.applications' sets, at small inputs (2 cores). ResNet152 is
# left out for time: its layer names follow ResNet101's pattern (more blocks per stage).
H5_CASES = [
    (keras.applications.ResNet50, kcnn.resnet50, (32, 32, 3), True),
    (keras.applications.ResNet101, kcnn.resnet101, (32, 32, 3), False),
    (keras.applications.VGG16, kcnn.vgg16, (64, 64, 3), True),
    (keras.applications.VGG19, kcnn.vgg19, (32, 32, 3), False),
]


@pytest.mark.parametrize("application,builder,shape,include_top", H5_CASES, ids=lambda f: getattr(f, "__name__", str(f)))
def test_keras_applications_h5_files_load_with_equal_outputs(application, builder, shape, include_top, rng, tmp_path):
    """Keras 2's legacy `.h5` (the published files) and, for ResNet50 and VGG16, the
    Keras 3 `.weights.h5` the same model saves: Keras 3 keys its entries by layer class
    and rank, not name, so the ResNet's BatchNormalization entries are read into kcnn's
    fused BatchNorm (issue 26)."""
    source = application(weights=None, input_shape=shape, include_top=include_top, classifier_activation=None)
    randomize_batchnorm_statistics(source, rng)
    path = tmp_path / "weights.h5"
    save_keras2_h5(source, path)
    x = rng.uniform(-120, 150, size=(2, *shape)).astype("float32")
    expected = np.asarray(source(x, training=False))
    if include_top:
        # The file is what Keras' own legacy loader reads (by layer order).
        reread = application(weights=None, input_shape=shape, include_top=include_top, classifier_activation=None)
        reread.load_weights(path)
        np.testing.assert_array_equal(np.asarray(reread(x, training=False)), expected)

    target = builder(input_shape=shape, include_top=include_top, classifier_activation=None, weights=path)
    np.testing.assert_allclose(np.asarray(target(x, training=False)), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    if include_top:
        source.save_weights(tmp_path / "source.weights.h5")
        target = builder(input_shape=shape, classifier_activation=None, weights=tmp_path / "source.weights.h5")
        np.testing.assert_allclose(np.asarray(target(x, training=False)), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.fixture(scope="module")
def resnet50_files(tmp_path_factory):
    """keras.applications-layout top and no-top files of a random ResNet50 (32x32)."""
    folder = tmp_path_factory.mktemp("keras_files")
    rng = np.random.default_rng(1)
    files = {}
    for include_top in (True, False):
        source = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), include_top=include_top, classifier_activation=None)
        randomize_batchnorm_statistics(source, rng)
        files[include_top] = folder / f"resnet50_{'top' if include_top else 'notop'}.h5"
        save_keras2_h5(source, files[include_top])
    return files


def test_a_top_file_loads_into_a_backbone_and_a_no_top_file_does_not_make_a_classifier(resnet50_files):
    backbone = kcnn.resnet50(input_shape=(32, 32, 3), include_top=False, weights=resnet50_files[True])
    with h5py.File(resnet50_files[True]) as file:
        np.testing.assert_array_equal(backbone.get_layer("conv5_block3_3_conv").get_weights()[0], file["conv5_block3_3_conv/conv5_block3_3_conv/kernel:0"][()])
    with pytest.raises(ValueError, match=r"has no classifier \(predictions\): build the model with include_top=False"):
        kcnn.resnet50(input_shape=(32, 32, 3), weights=resnet50_files[False])
    with pytest.raises(ValueError, match=r"convolutions have biases: it is for variant='v1'"):
        kcnn.resnet50(input_shape=(32, 32, 3), variant="v1.5", include_top=False, weights=resnet50_files[False])
    with pytest.raises(ValueError, match=r"another number of classes.*Received: shapes \[\(2048, 1000\), \(1000,\)\]"):
        kcnn.resnet50(input_shape=(32, 32, 3), classes=10, weights=resnet50_files[True])


def _md5(path):
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def local_table(resnet50_files, tmp_path, monkeypatch):
    """The table with resnet50's keras.applications row pointing at local files
    (file:// URLs) with their true hashes, and an empty cache in KCNN_HOME."""
    monkeypatch.setenv("KCNN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KCNN_OFFLINE", raising=False)
    row = table.get_weight_set("resnet50.keras_in1k")
    local = dataclasses.replace(
        row,
        url=resnet50_files[True].as_uri(),
        hash=_md5(resnet50_files[True]),
        notop_url=resnet50_files[False].as_uri(),
        notop_hash=_md5(resnet50_files[False]),
    )
    monkeypatch.setattr(table, "WEIGHTS", tuple(local if each is row else each for each in table.WEIGHTS))
    return local


def test_imagenet_weights_are_downloaded_checked_cached_and_remembered(local_table, resnet50_files):
    model = kcnn.resnet50(weights="imagenet", input_shape=(32, 32, 3), classifier_activation=None)
    cached = store.cache_dir() / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert cached.read_bytes() == resnet50_files[True].read_bytes()
    assert kcnn.weights.weight_set_of(model) is local_table
    reference = kcnn.resnet50(weights=resnet50_files[True], input_shape=(32, 32, 3), classifier_activation=None)
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(reference(x)))
    # The no-top file is its own download; any `classes` goes with include_top=False.
    backbone = kcnn.resnet50(weights="imagenet-keras", include_top=False, classes=10, input_shape=(32, 32, 3))
    assert (store.cache_dir() / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").is_file()
    assert backbone.output_shape == (None, 1, 1, 2048)
    assert sorted(os.listdir(store.cache_dir())) == [
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ]


def test_a_cached_file_with_a_wrong_hash_is_refused_and_never_loaded(local_table, resnet50_files, monkeypatch):
    cached = store.cache_dir() / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(resnet50_files[True].read_bytes())  # a valid file, but the wrong one
    calls = []
    monkeypatch.setattr(kcnn.weights.transfer, "assign", lambda *a, **k: calls.append(a))
    with pytest.raises(store.HashMismatchError, match=r"The cached file .*_notop\.h5 has md5 [0-9a-f]{32}, the weights table .*Delete it"):
        kcnn.resnet50(weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    assert calls == []


def test_a_download_with_a_wrong_hash_leaves_nothing_in_the_cache(local_table, monkeypatch):
    wrong = dataclasses.replace(local_table, hash="md5:" + "0" * 32)
    monkeypatch.setattr(table, "WEIGHTS", tuple(wrong if each is local_table else each for each in table.WEIGHTS))
    with pytest.raises(store.HashMismatchError, match=r"The download of file://.* has md5"):
        kcnn.resnet50(weights="imagenet", input_shape=(32, 32, 3))
    assert not store.cache_dir().exists() or os.listdir(store.cache_dir()) == []


def test_offline_without_a_cached_file_names_the_url_the_file_and_the_place(local_table, monkeypatch):
    monkeypatch.setenv("KCNN_OFFLINE", "1")
    expected = str(store.cache_dir() / "resnet50_weights_tf_dim_ordering_tf_kernels.h5")
    with pytest.raises(store.WeightsUnavailableError) as raised:
        kcnn.resnet50(weights="imagenet", input_shape=(32, 32, 3))
    message = str(raised.value)
    assert local_table.url in message and expected in message and "KCNN_OFFLINE is set" in message
    # An unreachable URL says the same, with the reason.
    monkeypatch.delenv("KCNN_OFFLINE")
    gone = dataclasses.replace(local_table, url=local_table.url + ".missing")
    with pytest.raises(store.WeightsUnavailableError, match=r"the download failed.*put it at"):
        store.fetch(gone)


def test_weight_tags_are_resolved_and_checked():
    assert table.resolve("resnet50", "imagenet").name == "resnet50.keras_in1k"
    assert table.resolve("resnet50", "imagenet-tv2").name == "resnet50.tv2_in1k"
    assert table.resolve("resnet50", "resnet50.a1_in1k").tag == "a1_in1k"
    assert table.resolve("vgg16_bn", "imagenet").preprocessing.mode == "torch"
    with pytest.raises(ValueError, match=r"Unknown weights for `resnet50`\. Known: 'imagenet' \(= 'imagenet-keras'\), 'imagenet-keras', 'imagenet-tv', 'imagenet-tv2', 'imagenet-a1'\. Received: weights='imagenet-tv3'"):
        kcnn.resnet50(weights="imagenet-tv3")
    # The builder takes the arguments the weights need; an explicit other value is refused.
    with pytest.raises(ValueError, match=r"resnet50\.a1_in1k are for variant='v1\.5': build kcnn\.resnet50\(variant='v1\.5', weights='imagenet-a1'\), or leave `variant` out\. Received: variant='v1'"):
        kcnn.resnet50(variant="v1", weights="imagenet-a1")
    with pytest.raises(ValueError, match=r"1000 ImageNet classes.*include_top=False.*Received: classes=10"):
        kcnn.vgg16(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match=r"No pretrained weights are known for `resnet`; models with ImageNet weights: .*resnet101, "):
        kcnn.resnet(weights="imagenet")
    with pytest.raises(ValueError, match=r"build it by that model's name"):
        kcnn.resnet(stages=(3, 4, 6, 3), block="bottleneck", name="resnet50", weights="imagenet")


def test_imagenet_never_names_a_set_that_cannot_be_downloaded_and_checked():
    # resnet34, vgg13 and vgg11_bn have only rows without a recorded hash: no default,
    # and the error says which file to fetch, how to name it and what to call.
    for model in ("resnet34", "vgg13", "vgg11_bn"):
        assert table.default_weight_set(model) is None
    with pytest.raises(store.WeightsUnavailableError) as raised:
        kcnn.resnet34(weights="imagenet")
    message = str(raised.value)
    assert message.startswith("`resnet34` has no weight set kcnn can download and check: no hash is recorded for resnet34.tv_in1k")
    assert "https://huggingface.co/timm/resnet34.tv_in1k/resolve/c983eba7f5e69bc3548a626d1b0b0b914e5de3a6/model.safetensors" in message
    assert "save it as `resnet34.tv_in1k.safetensors` and pass its path: kcnn.resnet34(weights='/path/to/resnet34.tv_in1k.safetensors')" in message
    assert "(variant='v1.5')" in message and "'torch' preprocessing" in message
    # Every default has a hash; a row without one is still named by its tag, and refused.
    assert all(table.default_weight_set(model).hash for model in table.models_with_weights() if table.default_weight_set(model))
    with pytest.raises(store.WeightsUnavailableError, match=r"No published hash is recorded for resnet50\.tv2_in1k.*save it as `resnet50\.tv2_in1k\.safetensors`"):
        kcnn.resnet50(weights="imagenet-tv2")


def test_the_table_is_consistent():
    names = [row.name for row in table.WEIGHTS]
    assert len(names) == len(set(names))
    for row in table.WEIGHTS:
        assert row.model in kcnn.list_models()
        assert row.url.startswith("https://")
        if row.format == "safetensors":
            assert row.url.startswith(f"https://huggingface.co/timm/{row.name}/resolve/")
            revision = row.url.split("/resolve/")[1].split("/")[0]
            assert revision == "main" or (len(revision) == 40 and int(revision, 16) >= 0)
        if row.format == "onnx":  # The ONNX Model Zoo, pinned to a commit; the hash is its Git-LFS oid.
            revision = row.url.removeprefix("https://github.com/onnx/models/raw/").split("/")[0]
            assert len(revision) == 40 and int(revision, 16) >= 0 and row.url.endswith("-12.onnx") and row.hash
        if row.hash:
            algorithm, value = row.hash.split(":")
            assert len(value) == {"md5": 32, "sha256": 64}[algorithm] and int(value, 16) >= 0
    assert [row.name for row in kcnn.weights.list_weights("vgg16*")] == ["vgg16.keras_in1k", "vgg16.tv_in1k", "vgg16_bn.tv_in1k"]


def test_docs_table_is_generated_from_the_weights_table():
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    generated = text.split("<!-- weights:start -->\n")[1].split("\n<!-- weights:end -->")[0]
    assert generated == table.format_markdown(table.WEIGHTS), "regenerate it with `kcnn weights list --markdown`"


def _rewrite_safetensors(source, target, edit_header, body_extra=b""):
    """`source` with its JSON header edited (as a damaged or forged file would be)."""
    raw = source.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    edit_header(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    target.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :] + body_extra)
    return target


def test_damaged_files_are_refused_with_their_name(tmp_path, resnet50_files):
    truncated = tmp_path / "resnet50.h5"
    truncated.write_bytes(resnet50_files[False].read_bytes()[:5000])
    with pytest.raises(formats.WeightFileError, match=r"resnet50\.h5 is truncated, damaged or no HDF5 file"):
        kcnn.resnet50(input_shape=(32, 32, 3), include_top=False, weights=truncated)
    # A Keras 3 file cut short: h5py's OSError becomes an error naming the file.
    keras3 = tmp_path / "lenet.weights.h5"
    kcnn.lenet5().save_weights(keras3)
    keras3.write_bytes(keras3.read_bytes()[:3000])
    with pytest.raises(formats.WeightFileError, match=r"lenet\.weights\.h5 is truncated, damaged or no HDF5 file"):
        kcnn.lenet5(weights=keras3)

    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.normal(size=(4, 3)).astype(np.float32), "b.weight": rng.normal(size=(4, 3)).astype(np.float32)}
    good = tmp_path / "good.safetensors"
    save_file(tensors, good)
    assert {k: v.tolist() for k, v in formats.read_safetensors(good).items()} == {k: v.tolist() for k, v in tensors.items()}

    def shift(header):  # every tensor 4 bytes later, the buffer 4 bytes longer
        for name in ("a.weight", "b.weight"):
            header[name]["data_offsets"] = [offset + 4 for offset in header[name]["data_offsets"]]

    def share(header):  # two same-shaped tensors on the same bytes
        header["b.weight"]["data_offsets"] = header["a.weight"]["data_offsets"]

    def outside(header):
        header["b.weight"]["data_offsets"] = [48, 4096]

    damaged = {
        "shifted": _rewrite_safetensors(good, tmp_path / "shifted.safetensors", shift, b"\0" * 4),
        "shared": _rewrite_safetensors(good, tmp_path / "shared.safetensors", share),
        "outside": _rewrite_safetensors(good, tmp_path / "outside.safetensors", outside),
    }
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    damaged["cut"] = cut
    for name, path in damaged.items():
        with pytest.raises(formats.WeightFileError, match=rf"{name}\.safetensors is truncated, damaged or no safetensors file .*Received: Error while deserializing header"):
            formats.read_safetensors(path)
    tensors["b.weight"][1, 2] = np.nan
    save_file(tensors, tmp_path / "nan.safetensors")
    with pytest.raises(formats.WeightFileError, match=r"nan\.safetensors is damaged: tensor 'b\.weight' of shape \(4, 3\) holds 1 NaN or infinite"):
        formats.read_safetensors(tmp_path / "nan.safetensors")


def test_a_missing_tensor_is_named_with_the_file(tmp_path):
    manifest = json.loads((pathlib.Path(__file__).parent / "fixtures" / "torch_manifests.json").read_text())["resnet18"]
    tensors = torch_weights.random_tensors(manifest)
    del tensors["layer2.0.bn1.running_var"]
    path = tmp_path / "mine.safetensors"
    save_file(tensors, path)
    with pytest.raises(convert.WeightMapError, match=r"mine\.safetensors does not fit `resnet18`: tensor layer2\.0\.bn1\.running_var is missing \(the file has layer2\.0\.bn1\.bias, layer2\.0\.bn1\.running_mean, layer2\.0\.bn1\.weight\)"):
        kcnn.resnet18(variant="v1.5", input_shape=(32, 32, 3), weights=path)


def test_keras_applications_weights_transfer_by_name_with_equal_predictions(rng):
    shape = (64, 64, 3)
    source = keras.applications.ResNet50(weights=None, input_shape=shape, classes=10, classifier_activation=None)
    randomize_batchnorm_statistics(source, rng)
    target = kcnn.resnet50(input_shape=shape, classes=10, classifier_activation=None)
    copied = transfer_weights(source, target, require_all=True)
    assert len(copied) == len([layer for layer in target.layers if layer.weights])
    x = rng.uniform(0, 255, size=(2, *shape)).astype("float32")
    expected = np.asarray(source(x, training=False))
    np.testing.assert_allclose(np.asarray(target(x, training=False)), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_mismatched_classes_are_refused_with_a_hint(tmp_path):
    source = kcnn.resnet18(input_shape=(32, 32, 3), classes=10)
    path = tmp_path / "resnet18.keras"
    source.save(path)
    with pytest.raises(ValueError, match=r"different number of classes.*include_top=False.*Received: shapes"):
        kcnn.resnet18(input_shape=(32, 32, 3), classes=5, weights=path)
    # The backbone alone loads, and equals the source's.
    backbone = kcnn.resnet18(input_shape=(32, 32, 3), include_top=False, weights=path)
    np.testing.assert_array_equal(
        backbone.get_layer("conv5_block2_2_conv").get_weights()[0],
        source.get_layer("conv5_block2_2_conv").get_weights()[0],
    )


# Keras warns that it skipped a container of the file before it raises for the mismatched
# model; kcnn's error says what happened.
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_weights_h5_file_loads_into_the_same_architecture(tmp_path, rng):
    source = kcnn.lenet5()
    path = tmp_path / "lenet.weights.h5"
    source.save_weights(path)
    loaded = kcnn.lenet5(weights=path)
    x = rng.uniform(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(source(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="same arguments"):
        load_weights(kcnn.lenet5(classes=3), path)


def test_no_shared_layer_is_an_error():
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2, name="unrelated")(inputs))
    with pytest.raises(ValueError, match="share no weighted layer"):
        transfer_weights(other, kcnn.lenet5())


def test_weights_list_command(capsys):
    from kcnn.cli import main

    assert main(["weights", "list", "resnet50*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:-1]] == ["resnet50.keras_in1k", "resnet50.tv_in1k", "resnet50.tv2_in1k", "resnet50.a1_in1k"]
    assert "*imagenet-keras" in lines[2] and "74.9" in lines[2] and "caffe" in lines[2] and "md5" in lines[2]
    assert "unknown" in lines[4]  # tv2: no recorded hash
    assert main(["weights", "list", "lenet5"]) == 2
    assert "Models with weights: alexnet, googlenet, resnet101, resnet152, resnet18" in capsys.readouterr().err
