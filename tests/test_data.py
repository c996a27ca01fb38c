"""Tests for kcnn.data: every source, the split policy and preprocessing reuse."""

import inspect
import json
import os
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from kcnn import data
from kcnn.data import tfds_source


@pytest.fixture(scope="module")
def digits_raw():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def first_batch(split):
    x, y = next(iter(split))
    return x.numpy(), y.numpy()


# --------------------------------------------------------------------------
# digits


def test_digits_defaults(digits, digits_raw):
    _, target = digits_raw
    per_class = np.bincount(target)
    # The test split takes round(20%) of every class, validation round(10%).
    assert digits.num_test == int(sum(round(n * 0.2) for n in per_class)) == 359
    assert digits.num_validation == int(sum(round(n * 0.1) for n in per_class)) == 179
    assert digits.num_train + digits.num_validation + digits.num_test == 1797
    assert digits.num_classes == 10
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.input_shape == (32, 32, 1)
    assert digits.batch_size == 32
    assert digits.steps_per_epoch == -(-digits.num_train // 32)
    assert digits.name == "digits"

    x, y = first_batch(digits.train)
    assert x.shape == (32, 32, 32, 1) and x.dtype == np.float32
    assert y.shape == (32,) and y.dtype == np.int32
    for split in (digits.train, digits.validation, digits.test):
        xs, ys = data.as_numpy(split)
        assert xs.dtype == np.float32 and ys.dtype == np.int32
        assert xs.min() >= 0.0 and xs.max() <= 1.0
        assert xs.max() > 0.9  # Really [0, 1], not the 0..16 scale shrunk.
        assert set(np.unique(ys)) == set(range(10))
        # Stored as uint8 pixels, so every value is k / 255.
        np.testing.assert_allclose(xs * 255, np.round(xs * 255), atol=1e-4)


def test_digits_preprocessing_dict_is_json(digits):
    assert digits.preprocessing == {
        "version": 1,
        "image_size": [32, 32],
        "channels": 1,
        "normalization": "unit",
        "mean": None,
        "std": None,
        "resize": "bilinear",
        "antialias": True,
    }
    assert json.loads(json.dumps(digits.preprocessing)) == digits.preprocessing


def test_digits_splits_partition_every_class(digits_raw):
    _, target = digits_raw
    ds = data.load("digits", shuffle=False)
    counts = sum(np.bincount(data.as_numpy(s)[1], minlength=10) for s in (ds.train, ds.validation, ds.test))
    np.testing.assert_array_equal(counts, np.bincount(target))


def test_digits_three_channels_repeat_the_grey_level(digits):
    rgb = data.load("digits", channels=3)
    assert rgb.input_shape == (32, 32, 3)
    x, _ = data.as_numpy(rgb.test)
    assert x.shape == (digits.num_test, 32, 32, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    grey, _ = data.as_numpy(digits.test)
    np.testing.assert_array_equal(x[..., :1], grey)


def test_digits_native_size():
    ds = data.load("digits", image_size=8, batch_size=5)
    x, _ = first_batch(ds.train)
    assert x.shape == (5, 8, 8, 1)
    assert ds.preprocessing["image_size"] == [8, 8]


def test_same_seed_same_batches_other_seed_differs(digits):
    # Fresh loads: each iteration of a training split is a new (reshuffled) epoch.
    first, again = data.load("digits"), data.load("digits")
    x1, y1 = first_batch(first.train)
    x2, y2 = first_batch(again.train)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(data.as_numpy(digits.test)[0], data.as_numpy(again.test)[0])

    other = data.load("digits", seed=7)
    x3, _ = first_batch(other.train)
    assert not np.array_equal(x1, x3)
    assert not np.array_equal(data.as_numpy(digits.test)[0], data.as_numpy(other.test)[0])


def test_reshuffled_keeps_the_split_and_draws_another_order(digits):
    # The finish's repeats with other seeds (kcnn.tune.finish.repeat) are scored on the same images.
    other, same = digits.reshuffled(7), digits.reshuffled(1337)  # 1337: load's default seed
    for split in ("validation", "test"):
        np.testing.assert_array_equal(data.as_numpy(getattr(other, split))[0], data.as_numpy(getattr(digits, split))[0])
    first, again, reshuffled = (data.as_numpy(d.train)[1] for d in (digits.restarted(), same, other))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, reshuffled)
    np.testing.assert_array_equal(np.sort(first), np.sort(reshuffled))
    with pytest.raises(ValueError, match="Received: seed='7'"):
        digits.reshuffled("7")


def test_training_split_is_reshuffled_each_epoch(digits):
    epoch1 = data.as_numpy(digits.train)[1]
    epoch2 = data.as_numpy(digits.train)[1]
    assert not np.array_equal(epoch1, epoch2)
    np.testing.assert_array_equal(np.sort(epoch1), np.sort(epoch2))
    # Evaluation splits keep a fixed order.
    np.testing.assert_array_equal(data.as_numpy(digits.test)[1], data.as_numpy(digits.test)[1])


def test_test_split_does_not_depend_on_validation_split(digits):
    more_val = data.load("digits", validation_split=0.25)
    assert more_val.num_test == digits.num_test
    np.testing.assert_array_equal(data.as_numpy(more_val.test)[0], data.as_numpy(digits.test)[0])
    assert more_val.num_validation > digits.num_validation


def test_zero_fractions_give_no_split():
    ds = data.load("digits", validation_split=0, test_split=0)
    assert ds.validation is None and ds.test is None
    assert ds.num_validation == ds.num_test == 0
    assert ds.num_train == 1797


def test_with_batch_size(digits):
    assert digits.with_batch_size(32) is digits
    small = digits.with_batch_size(10)
    assert small.batch_size == 10 and small.num_train == digits.num_train
    assert first_batch(small.train)[0].shape == (10, 32, 32, 1)
    assert first_batch(small.test)[0].shape == (10, 32, 32, 1)
    with pytest.raises(ValueError, match="batch_size=0"):
        digits.with_batch_size(0)


def test_normalization_modes():
    sym = data.load("digits", normalize="symmetric")
    x, _ = data.as_numpy(sym.test)
    assert x.min() == -1.0 and x.max() <= 1.0

    raw = data.load("digits", normalize=False)
    x, _ = data.as_numpy(raw.test)
    assert raw.preprocessing["normalization"] == "none"
    assert x.max() > 200 and x.max() <= 255

    std = data.load("digits", normalize="standardize", shuffle=False)
    assert len(std.preprocessing["mean"]) == len(std.preprocessing["std"]) == 1
    x, _ = data.as_numpy(std.train)
    assert abs(float(x.mean())) < 1e-3
    assert abs(float(x.std()) - 1.0) < 1e-3
    json.dumps(std.preprocessing)


# --------------------------------------------------------------------------
# augmentation


@pytest.mark.parametrize("augment", [True, "flip"])
def test_augmentation_only_touches_training_images(digits, augment):
    aug = data.load("digits", augment=augment)
    x_plain, y_plain = first_batch(data.load("digits").train)
    x_aug, y_aug = first_batch(aug.train)
    # Same seed: same examples in the same order, but moved pixels.
    np.testing.assert_array_equal(y_plain, y_aug)
    assert x_aug.shape == x_plain.shape and x_aug.dtype == np.float32
    assert not np.array_equal(x_aug, x_plain)
    assert x_aug.min() >= 0.0 and x_aug.max() <= 1.0
    for name in ("validation", "test"):
        np.testing.assert_array_equal(
            data.as_numpy(getattr(aug, name))[0], data.as_numpy(getattr(digits, name))[0]
        )


def epochs(dataset, count=2):
    """The training split's first `count` epochs (one iteration each), as arrays."""
    return [data.as_numpy(dataset.train) for _ in range(count)]


@pytest.mark.parametrize("augment", ["shift", "flip"])
def test_seeded_augmentation_is_the_same_for_the_same_seed_and_epoch(augment):
    first = epochs(data.load("digits", augment=augment, seed=7, shuffle=False))
    again = epochs(data.load("digits", augment=augment, seed=7, shuffle=False))
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    # Same images in the same order (no shuffling), moved otherwise in the next epoch.
    np.testing.assert_array_equal(first[0][1], first[1][1])
    assert not np.array_equal(first[0][0], first[1][0])
    other = data.load("digits", augment=augment, seed=8, shuffle=False)
    assert not np.array_equal(data.as_numpy(other.train)[0], first[0][0])
    # Shuffled, the same: the order and the shifts depend on the seed and the epoch only.
    shuffled = [epochs(data.load("digits", augment=augment, seed=7)) for _ in range(2)]
    for (x1, _), (x2, _) in zip(*shuffled, strict=True):
        np.testing.assert_array_equal(x1, x2)


def test_seeded_augmentation_is_the_same_in_a_new_process():
    import hashlib
    import subprocess
    import sys

    import tensorflow as tf

    script = (
        "import hashlib, sys, tensorflow as tf\n"
        "from kcnn import data\n"
        "tf.random.set_seed(3)\n"
        "ds = data.load('digits', augment='flip', seed=7)\n"
        "digest = hashlib.sha256()\n"
        "for _ in range(2):\n"
        "    x, y = data.as_numpy(ds.train)\n"
        "    digest.update(x.tobytes()); digest.update(y.tobytes())\n"
        "print(digest.hexdigest())\n"
    )
    # The shuffle and the augmentation keys follow TensorFlow's global seed when one is set.
    tf.random.set_seed(3)
    ds = data.load("digits", augment="flip", seed=7)
    digest = hashlib.sha256()
    for x, y in epochs(ds):
        digest.update(x.tobytes())
        digest.update(y.tobytes())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == digest.hexdigest()


def test_shift_moves_whole_images_by_at_most_an_eighth_with_zero_fill():
    # Pixel (r, c) holds (r + 1, c + 1, 1) * 7: a pixel's value tells where it came from.
    n, size = 64, 32
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1) + 1
    image = np.concatenate([grid, np.ones((size, size, 1), int)], -1) * 7
    x, y = np.repeat(image[None], n, 0).astype(np.uint8), np.arange(n) % 2
    for augment in ("shift", "flip"):
        ds = data.load((x, y), augment=augment, normalize=False, validation_split=0, test_split=0, batch_size=16)
        moved, _ = data.as_numpy(ds.train)
        shifts = set()
        flips = 0
        for out in moved.astype(int):
            filled = out[..., 2] == 7
            rows, cols = np.flatnonzero(filled.any(1)), np.flatnonzero(filled.any(0))
            # The image content is one rectangle; everything outside it is zero.
            assert filled[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
            assert not out[~filled].any()
            dy = rows[0] - (out[rows[0], cols[0], 0] // 7 - 1)
            source_col = out[rows[0], cols, 1] // 7 - 1
            flipped = source_col[0] > source_col[-1]
            flips += flipped
            dx = cols[0] - (size - 1 - source_col[0] if flipped else source_col[0])
            shifts.add((int(dy), int(dx)))
            assert abs(dy) <= 4 and abs(dx) <= 4  # 12.5% of 32
            np.testing.assert_array_equal(np.abs(np.diff(source_col)), 1)  # nearest: whole pixels
        assert len(shifts) > 20  # every image its own shift
        assert (flips > 10) if augment == "flip" else (flips == 0)


def test_custom_augmentation_callable_sees_pixels(digits):
    aug = data.load("digits", augment=lambda x: 255.0 - x)
    x_plain, _ = first_batch(data.load("digits").train)
    x_aug, _ = first_batch(aug.train)
    np.testing.assert_allclose(x_aug, 1.0 - x_plain, atol=1e-6)


# --------------------------------------------------------------------------
# TFDS (mocked, offline)


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_tfds_mnist_mocked(tfds, tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        ds = data.load("mnist", batch_size=8, data_dir=tmp_path)
        assert ds.name == "mnist"
        assert ds.class_names == [str(i) for i in range(10)]
        assert ds.input_shape == (28, 28, 1)
        # The mock serves 20 examples for any split or slice.
        assert (ds.num_train, ds.num_validation, ds.num_test) == (20, 20, 20)
        assert ds.validation is not None
        for split in (ds.train, ds.validation, ds.test):
            x, y = first_batch(split)
            assert x.shape == (8, 28, 28, 1) and x.dtype == np.float32
            assert y.shape == (8,) and y.dtype == np.int32
            assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
            assert y.min() >= 0 and y.max() <= 9
        # Fresh loads with one seed give the same first epoch.
        fresh = [data.load("mnist", batch_size=8, data_dir=tmp_path) for _ in range(2)]
        np.testing.assert_array_equal(first_batch(fresh[0].train)[0], first_batch(fresh[1].train)[0])

        rgb = data.load("mnist", batch_size=4, image_size=32, channels=3, augment=True)
        x, _ = first_batch(rgb.train)
        assert x.shape == (4, 32, 32, 3)
        x, _ = first_batch(rgb.test)
        np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_tfds_variable_size_defaults_to_224(tfds):
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load("tf_flowers", batch_size=3)
        assert ds.input_shape == (224, 224, 3)
        assert ds.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
        # No test split in tf_flowers: both are carved from train.
        assert ds.validation is not None and ds.test is not None
        assert first_batch(ds.test)[0].shape == (3, 224, 224, 3)


def test_tfds_slices():
    assert tfds_source._slices(1000, (0.1, 0.2)) == ["train[:700]", "train[700:800]", "train[800:1000]"]
    assert tfds_source._slices(None, (0.1, 0.0)) == ["train[:90%]", "train[90%:100%]", None]
    assert tfds_source._slices(5, (0.05, 0.2)) == ["train[:4]", None, "train[4:5]"]


@pytest.fixture(scope="module")
def sharded_tfds(tfds, tmp_path_factory):
    """A TFDS dataset prepared in a local folder, its training split in 4 files: 64
    4x4 grey images whose pixels are their index (and a test split of 8)."""

    class KcnnShards(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {"image": tfds.features.Image(shape=(4, 4, 1)), "label": tfds.features.ClassLabel(num_classes=2)}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(64, 0), "test": self._generate_examples(8, 100)}

        def _generate_examples(self, count, offset):
            for i in range(count):
                yield i, {"image": np.full((4, 4, 1), offset + i, np.uint8), "label": i % 2}

    data_dir = tmp_path_factory.mktemp("tfds")
    KcnnShards(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=4, try_download_gcs=False)
    )
    return data_dir


def test_a_tfds_split_read_each_epoch_takes_its_files_in_a_new_order(sharded_tfds, monkeypatch):
    """Issue 27: a TFDS split too large to cache was read in one fixed file order, with a
    10,000-element buffer: a weak shuffle where data is biggest. Its files now come in
    another order each epoch, the same orders for a seed; a resumed run, which moves
    the split on by the epochs done (starting iterations), continues them exactly."""
    from kcnn.data import pipeline, splits

    monkeypatch.setattr(splits, "_TFDS_SHUFFLE_BUFFER", 1)  # No element shuffle: what is seen is the files' order.

    def epochs(seed, count=4, skip=0, **options):
        options = {"cache": False, **options}
        ds = data.load("kcnn_shards", data_dir=sharded_tfds, validation_split=0, seed=seed, batch_size=16, normalize=False, **options)
        for _ in range(skip):  # As kcnn.train.phases._skip_epochs does.
            iter(ds.train)
        orders = [tuple(data.as_numpy(ds.train)[0][:, 0, 0, 0].astype(int)) for _ in range(count)]
        assert all(sorted(order) == list(range(64)) for order in orders)
        tests = [tuple(data.as_numpy(ds.test)[0][:, 0, 0, 0].astype(int)) for _ in range(2)]
        assert tests[0] == tests[1] and sorted(tests[0]) == list(range(100, 108))  # Not shuffled.
        return orders

    first = epochs(3)
    assert len(set(first)) > 1  # The files' order changes from epoch to epoch.
    assert epochs(3, count=2, skip=2) == first[2:] and epochs(4) != first
    # Cached in memory, the split keeps the order of the pass that filled the cache; above
    # the in-memory limit it is read afresh, files shuffled.
    assert len(set(epochs(3, cache=True))) == 1
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT", 64 * 16 - 1)
    assert epochs(3, cache=True) == first
    # With the elements shuffled too (a window of the whole split here), as exactly.
    monkeypatch.undo()
    shuffled = epochs(3, count=3)
    assert len(set(shuffled)) == 3 and epochs(3, count=1, skip=2) == shuffled[2:]
    # Two workers of a cluster: each decodes its rows only, together the batches of one process.
    from kcnn.train.distribute import batch_share

    ds = data.load("kcnn_shards", data_dir=sharded_tfds, cache=False, validation_split=0, seed=3, batch_size=16, augment="flip")
    workers = [ds.for_worker(batch_share(index, 2, 2)) for index in range(2)]
    for _ in range(2):
        whole, *parts = (list(d.train.as_numpy_iterator()) for d in (ds, *workers))
        for (x, _), (x0, _), (x1, _) in zip(whole, *parts, strict=True):
            theirs = np.asarray(batch_share(1, 2, 2)(np.arange(16), 16))
            assert not x0[theirs].any() and not x1[~theirs].any()
            np.testing.assert_array_equal(x0 + x1, x)


def test_unknown_name_lists_known_names(tfds):
    with pytest.raises(ValueError) as info:
        data.load("mnsit")
    message = str(info.value)
    assert "Did you mean: mnist" in message
    assert "'digits'" in message and "cifar10" in message
    assert "Received: source='mnsit'" in message
    with pytest.raises(ValueError, match="no such directory"):
        data.load(os.path.join("no", "such", "folder"))


def test_a_path_or_an_unknown_name_never_reaches_tfds(tfds, tmp_path, monkeypatch):
    """Issue 26: a folder path (or a name nothing knows) went to `tfds.builder`, which
    looks it up on the network. Paths are paths, "~" included; only registered or
    locally prepared names are TFDS's."""

    def consulted(*args, **kwargs):
        raise AssertionError(f"tfds.builder{args} was called")

    monkeypatch.setattr(tfds, "builder", consulted)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "data").mkdir()
    for source, received in (
        ("data/petz", "(no such directory or file)"),  # A typo below an existing folder.
        ("./pets", "(no such directory or file)"),
        ("~/pets", "(no such directory or file)"),
        ("my-pets", "(no such directory or file)"),
        (str(tmp_path / "pets"), "(no such directory or file)"),
        ("my_pets", "Unknown dataset 'my_pets'"),  # Neither registered nor prepared.
    ):
        with pytest.raises(ValueError, match=re.escape(received)):
            data.load(source)
    save(tmp_path / "photo.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"class sub-folders or an \.npz file .*Received: source='photo\.png', a file"):
        data.load("photo.png")
    for label in ("a", "b"):
        save(tmp_path / "home" / "pets" / label / "0.png", np.full((8, 8), 9, np.uint8))
    assert data.load("~/pets", validation_split=0, test_split=0).name == str(tmp_path / "home" / "pets")


def test_unprepared_tfds_dataset_is_a_clear_error(tfds, tmp_path):
    with pytest.raises(ValueError, match="not prepared.*download=True") as info:
        data.load("mnist", data_dir=tmp_path)
    assert_ways_out(str(info.value), "mnist", tmp_path)
    assert str(info.value).endswith(f"Received: source='mnist', download=False, data_dir={str(tmp_path)!r}")


def assert_ways_out(message, name, folder):
    """The TFDS errors name the dataset, the folder looked in, and every way out."""
    assert repr(name) in message and repr(str(folder)) in message
    assert "`--download --data-dir DIR`" in message
    assert "`data_options={'download': True, 'data_dir': DIR}`" in message
    assert f"kcnn.data.load({name!r}, download=True, data_dir=DIR)" in message
    assert f"copy its folder ~/tensorflow_datasets/{name} into" in message


@pytest.fixture
def offline(monkeypatch):
    """No network in this process: name lookups and connections fail at once.
    Returns the (host, port) pairs something tried to reach."""
    import socket

    tried = []

    def lookup(host, port, *args, **kwargs):
        tried.append((host, port))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (network disabled by the test)")

    def connect(address, *args, **kwargs):
        return lookup(*address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket, "create_connection", connect)
    return tried


def test_offline_download_fails_fast_with_the_ways_out(tfds, tmp_path, offline, monkeypatch):
    # TFDS would retry each file for minutes: its download must not even start.
    started = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda self, *a, **k: started.append(self.name))
    with pytest.raises(ValueError, match="Cannot download the TFDS dataset 'mnist': its download host cannot be reached") as info:
        data.load("mnist", data_dir=tmp_path, download=True)
    assert started == []
    assert offline == [("storage.googleapis.com", 443)]  # One short look at mnist's host, no retries.
    message = str(info.value)
    assert "storage.googleapis.com:443: " in message and "network disabled by the test" in message
    assert_ways_out(message, "mnist", tmp_path)


def test_download_goes_through_tfds_download_manager(tfds, tmp_path, monkeypatch):
    # tensorflow-datasets 4.9.10 imports `importlib_resources` (declared by kcnn, as
    # TFDS declares it for Python < 3.9 only) when it makes its download manager:
    # the download must get as far as fetching files. Fetching fails here, offline,
    # and that failure is reported with the ways out.
    import requests

    monkeypatch.setattr(tfds_source, "_unreachable", lambda endpoints, timeout=None: None)
    fetched = []

    def fetch(self, urls):
        fetched.append(urls)
        raise requests.exceptions.ConnectionError("no network in the test")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fetch)
    with pytest.raises(ValueError, match="Could not download and prepare the TFDS dataset 'mnist'.*no network in the test") as info:
        data.load("mnist", data_dir=tmp_path, download=True)
    assert len(fetched) == 1 and "train_data" in fetched[0]
    assert_ways_out(str(info.value), "mnist", tmp_path)


def test_download_endpoints_are_the_dataset_hosts_or_the_proxy(tfds, monkeypatch):
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    assert tfds_source._download_endpoints(tfds.builder("mnist")) == [("storage.googleapis.com", 443)]
    assert tfds_source._download_endpoints(tfds.builder("tf_flowers")) == [("download.tensorflow.org", 80)]
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    assert tfds_source._download_endpoints(tfds.builder("mnist")) == [("proxy.example", 3128)]


def test_a_reachable_host_is_reported_reachable():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert tfds_source._unreachable([("127.0.0.1", port)], timeout=5) is None
    # The port is closed now: refused at once.
    assert tfds_source._unreachable([("127.0.0.1", port)], timeout=5).startswith(f"127.0.0.1:{port}: ")


# --------------------------------------------------------------------------
# image folders


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    # Mostly 8x8, one 10x12 and one 16x16: the median size, 8x8, is the default.
    save(root / "cat" / "a.png", rng.integers(0, 256, (10, 12), dtype=np.uint8))
    for i in range(1, 5):
        save(root / "cat" / f"c{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    save(root / "cat" / "nested" / "deep.BMP", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    for i in range(4):
        save(root / "dog" / f"d{i}.PNG", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    save(root / "dog" / "colour.JPG", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (root / "dog" / "broken.jpeg").write_bytes(b"definitely not a jpeg" * 10)
    (root / "dog" / "notes.txt").write_text("ignored: not an image extension")
    (root / "README.md").write_text("files at the root are ignored")
    return root


def test_image_folder_skips_corrupt_files(image_folder):
    with (
        pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\).*broken\.jpeg"),
        pytest.warns(UserWarning, match=r"differ in size: 3 sizes .*: 8x8 \(9\), 10x12 \(1\), 16x16 \(1\)"),
        pytest.warns(UserWarning, match=r"Not read under .*pets': 1 file\(s\) without an image extension .*notes\.txt"),
    ):
        ds = data.load(str(image_folder), validation_split=0, test_split=0, shuffle=False, batch_size=64)
    assert ds.class_names == ["cat", "dog"]
    assert ds.num_classes == 2
    assert ds.input_shape == (8, 8, 3)  # The median size; RGB as one image is in colour.
    assert ds.num_train == 11
    x, y = data.as_numpy(ds.train)
    assert x.shape == (11, 8, 8, 3)
    np.testing.assert_array_equal(y, [0] * 6 + [1] * 5)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_image_folder_split_counts_and_read_images(image_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = data.load(
            image_folder, image_size=6, channels=1, validation_split=0.2, test_split=0.2, shuffle=False
        )
        ds_all = data.load(
            image_folder, image_size=6, channels=1, validation_split=0, test_split=0, shuffle=False
        )
    assert ds.num_train + ds.num_validation + ds.num_test == 11
    assert (ds.num_validation, ds.num_test) == (2, 2)  # round(0.2 * 6) + round(0.2 * 5) each.
    assert ds.input_shape == (6, 6, 1)

    # The predictor path gives exactly the training inputs.
    good = sorted((image_folder / "cat").rglob("*.*")) + sorted(
        p for p in (image_folder / "dog").iterdir() if p.suffix.lower() in (".png", ".jpg")
    )
    good = [p for p in good if p.name != "deep.BMP"]
    good.insert(5, image_folder / "cat" / "nested" / "deep.BMP")  # os.walk: files, then sub-folders.
    x_train, _ = data.as_numpy(ds_all.train)
    np.testing.assert_array_equal(data.read_images(good, ds_all.preprocessing), x_train)


def test_grey_folder_defaults_to_one_channel(tmp_path):
    for name in ("a", "b"):
        for i in range(3):
            save(tmp_path / name / f"{i}.png", np.full((5, 5), 40 * i, np.uint8))
    ds = data.load(tmp_path, validation_split=0, test_split=0, shuffle=False)
    assert ds.input_shape == (5, 5, 1)
    x, _ = data.as_numpy(ds.train)
    np.testing.assert_allclose(x[:3, 0, 0, 0], [0, 40 / 255, 80 / 255], atol=1e-6)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=f"no sub-directories.*|{tmp_path.name}") as info:
        data.load(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_class_folder_without_images_is_an_error(tmp_path):
    save(tmp_path / "full" / "x.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images") as info:
        data.load(str(tmp_path))
    assert str(tmp_path / "empty") in str(info.value)


def test_class_folder_with_only_corrupt_images_is_an_error(tmp_path):
    save(tmp_path / "good" / "x.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="failed to decode") as info:
        data.load(str(tmp_path))
    assert str(tmp_path / "bad") in str(info.value)


def test_load_image_on_corrupt_file(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Could not read an image"):
        data.load_image(path)


# --------------------------------------------------------------------------
# arrays and .npz


def labelled_images(n=60, size=(9, 7), classes=3, dtype=np.uint8, scale=1.0):
    """Images filled with 20 * label, so every pixel tells its label."""
    y = np.arange(n) % classes
    x = (np.ones((n, *size)) * (20 * y)[:, None, None] * scale).astype(dtype)
    return x, y


def test_uint8_nhw_arrays_are_scaled_to_unit_range():
    x, y = labelled_images()
    ds = data.load((x, y), batch_size=16)
    assert ds.name == "arrays"
    assert ds.input_shape == (9, 7, 1)
    assert ds.class_names == ["0", "1", "2"]
    assert ds.num_train + ds.num_validation + ds.num_test == 60
    assert (ds.num_validation, ds.num_test) == (6, 12)
    for split in (ds.train, ds.validation, ds.test):
        xs, ys = data.as_numpy(split)
        assert xs.dtype == np.float32 and ys.dtype == np.int32
        np.testing.assert_allclose(
            xs, np.broadcast_to((20 * ys / 255.0)[:, None, None, None], xs.shape), atol=1e-6
        )


def test_float_nhwc_arrays_in_unit_range_and_resize():
    x, y = labelled_images(dtype=np.float32, scale=1 / 255.0)
    ds = data.load({"x": np.repeat(x[..., None], 3, -1), "y": y[:, None]}, image_size=(4, 5), channels=1)
    xs, ys = data.as_numpy(ds.test)
    assert xs.shape == (12, 4, 5, 1)
    # Constant images survive resizing and the luma weights (which sum to 1).
    np.testing.assert_allclose(
        xs, np.broadcast_to((20 * ys / 255.0)[:, None, None, None], xs.shape), atol=1e-6
    )


def test_npz_with_own_test_split(tmp_path):
    x, y = labelled_images(n=50)
    xt, yt = labelled_images(n=9)
    path = tmp_path / "set.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["a", "b", "c"]))
    ds = data.load(str(path), validation_split=0.2)
    assert ds.class_names == ["a", "b", "c"]
    assert ds.num_test == 9  # The file's own test split, untouched.
    # Stratified: round(0.2 * 17) + round(0.2 * 17) + round(0.2 * 16).
    assert ds.num_train + ds.num_validation == 50 and ds.num_validation == 9
    _, ys = data.as_numpy(ds.test)
    np.testing.assert_array_equal(ys, yt)


def test_keras_datasets_layout():
    x, y = labelled_images(n=30)
    ds = data.load(((x, y), (x[:6], y[:6])), validation_split=0)
    assert (ds.num_train, ds.num_validation, ds.num_test) == (30, 0, 6)


def test_preprocess_images_matches_training(digits_raw):
    images, target = digits_raw
    ds = data.load("digits", validation_split=0, test_split=0, shuffle=False)
    x_train, y_train = data.as_numpy(ds.train)
    np.testing.assert_array_equal(y_train, target)
    # Digits are 0..16; the shared pixel scale is 0..255.
    out = data.preprocess_images(images * (255 / 16), ds.preprocessing)
    np.testing.assert_array_equal(out, x_train)
    # A JSON round trip of the dict and a list of single images work the same.
    restored = json.loads(json.dumps(ds.preprocessing))
    out = data.preprocess_images([images[0] * (255 / 16), images[1] * (255 / 16)], restored)
    np.testing.assert_array_equal(out, x_train[:2])


def test_preprocess_images_resizes_and_converts_uint8():
    preprocessing = data.load("digits", channels=3).preprocessing
    image = np.full((40, 30, 3), 255, np.uint8)
    out = data.preprocess_images([image, np.zeros((20, 20), np.uint8)], preprocessing)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1], 0.0)
    with pytest.raises(ValueError, match="Received: preprocessing="):
        data.preprocess_images(image[None], {"image_size": [8, 8]})


# --------------------------------------------------------------------------
# argument errors


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"image_size": (8, 8, 3)}, "image_size=(8, 8, 3)"),
        ({"channels": 2}, "channels=2"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"validation_split": 1.5}, "validation_split=1.5"),
        ({"validation_split": 0.5, "test_split": 0.5}, "validation_split=0.5, test_split=0.5"),
        ({"normalize": "zscore"}, "normalize='zscore'"),
        ({"augment": "rotate"}, "augment='rotate'"),
    ],
)
def test_invalid_arguments(kwargs, received):
    with pytest.raises(ValueError, match="Received: " + received.replace("(", r"\(").replace(")", r"\)")):
        data.load("digits", **kwargs)


def test_invalid_arrays():
    x, y = labelled_images(n=10)
    with pytest.raises(ValueError, match=r"Received: y with shape \(9,\)"):
        data.load((x, y[:9]))
    with pytest.raises(ValueError, match="Received keys"):
        data.load({"images": x, "labels": y})
    with pytest.raises(ValueError, match=r"Received: x with shape \(10, 2, 3, 5, 1\)"):
        data.load((np.zeros((10, 2, 3, 5, 1)), y))


# --------------------------------------------------------------------------
# mixed-size folders


def test_folder_of_mixed_sizes_warns_and_takes_the_median_size(tmp_path):
    for i in range(3):
        save(tmp_path / "a" / f"{i}.png", np.full((28, 28), 10 * i, np.uint8))
    save(tmp_path / "b" / "0.png", np.zeros((28, 28), np.uint8))
    save(tmp_path / "b" / "photo.png", np.zeros((480, 640, 3), np.uint8))  # The stray photo.
    with pytest.warns(UserWarning) as record:
        ds = data.load(tmp_path, validation_split=0, test_split=0)
    message = "\n".join(str(w.message) for w in record)
    assert f"The images under {str(tmp_path)!r} differ in size: 2 sizes (height x width (images)): 28x28 (4), 480x640 (1)." in message
    assert "All are resized to 28x28" in message
    assert ds.input_shape == (28, 28, 3)
    assert ds.input_statistics["source_size"] == [28, 28]
    assert ds.input_statistics["source_aspect"] == 1.0
    # A size the caller chose: no warning (issue 26); a default size in its place warns.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.load(tmp_path, validation_split=0, test_split=0, image_size=16).input_shape == (16, 16, 3)
    with pytest.warns(UserWarning, match="differ in size: 2 sizes .* All are resized to 12x12"):
        data.load(tmp_path, validation_split=0, test_split=0, default_image_size=12)
    # One size: no warning.
    (tmp_path / "b" / "photo.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.load(tmp_path, validation_split=0, test_split=0)


# --------------------------------------------------------------------------
# input statistics


def framed_images(n=10, size=16, value=200):
    """Black images with a `value` square inside a 4-pixel black frame."""
    x = np.zeros((n, size, size), np.uint8)
    x[:, 4:-4, 4:-4] = value
    return x, np.arange(n) % 2


def test_input_statistics_of_arrays_are_exact():
    x, y = framed_images()
    ds = data.load((x, y), validation_split=0, test_split=0, augment="shift", normalize="symmetric")
    # 64 of 256 pixels are 200; the 1-pixel border (1/16 of 16) is black.
    assert ds.input_statistics == {
        "version": 1,
        "images": 10,
        "mean": [50.0],
        "std": [round(float(np.sqrt(200**2 * 0.25 - 50**2)), 2)],
        "border_mean": [0.0],
        "border": 1,
        "source_size": [16, 16],
        "source_aspect": 1.0,
    }
    assert json.loads(json.dumps(ds.input_statistics)) == ds.input_statistics
    # Of the stored images (after resizing and channel adaptation), not the source's.
    resized = data.load((x, y), image_size=(32, 48), channels=3, validation_split=0, test_split=0)
    stats = resized.input_statistics
    assert stats["source_size"] == [16, 16] and stats["border"] == 2 and len(stats["mean"]) == 3
    assert stats["border_mean"] == [0.0, 0.0, 0.0]


def test_image_statistics_of_new_images_match_the_dataset(digits):
    raw = data.load("digits", normalize=False, validation_split=0.1, test_split=0.2, shuffle=False, batch_size=2000)
    x_train, _ = data.as_numpy(raw.train)
    assert data.image_statistics(x_train.astype(np.uint8)) == {
        key: digits.input_statistics[key] for key in ("images", "mean", "std", "border_mean", "border")
    }
    assert digits.input_statistics["source_size"] == [8, 8]
    single = data.image_statistics(np.full((32, 32, 1), 255, np.uint8))
    assert single == {"images": 1, "mean": [255.0], "std": [0.0], "border_mean": [255.0], "border": 2}
    with pytest.raises(ValueError, match=r"Received: images with shape \(5,\)"):
        data.image_statistics(np.zeros(5))


def test_input_statistics_of_a_tfds_source_come_from_a_sample(tfds):
    with tfds.testing.mock_data(num_examples=20):
        ds = data.load("mnist", image_size=32)
        stats = ds.input_statistics
        assert stats["images"] == 20 and stats["source_size"] == [28, 28] and stats["border"] == 2
        x, _ = data.as_numpy(data.load("mnist", image_size=32, normalize=False, shuffle=False, batch_size=64).train)
        np.testing.assert_allclose(stats["mean"], [x.mean()], atol=0.01)
        flowers = data.load("tf_flowers", batch_size=3).input_statistics
        assert len(flowers["mean"]) == 3 and len(flowers["source_size"]) == 2


# --------------------------------------------------------------------------
# few-shot selection


def test_few_shot_takes_per_class_images_of_the_chosen_classes(digits):
    target = data.few_shot("digits", classes=[5, 6, 7, 8, 9], per_class=3, validation_per_class=20, batch_size=5)
    assert target.class_names == ["5", "6", "7", "8", "9"]
    assert (target.num_train, target.num_validation) == (15, 100)
    assert target.batch_size == 5 and target.input_shape == (32, 32, 1)
    _, y_train = data.as_numpy(target.train)
    _, y_val = data.as_numpy(target.validation)
    np.testing.assert_array_equal(np.bincount(y_train), [3] * 5)
    np.testing.assert_array_equal(np.bincount(y_val), [20] * 5)
    # The test split is the source's (same seed and test_split), restricted and relabelled.
    x_test, y_test = data.as_numpy(target.test)
    x_all, y_all = data.as_numpy(digits.test)
    keep = y_all >= 5
    np.testing.assert_array_equal(y_test, y_all[keep] - 5)
    np.testing.assert_array_equal(x_test, x_all[keep])
    assert target.input_statistics["images"] == 15 and target.input_statistics["source_size"] == [8, 8]

    # Validation images are drawn first: more training images leave them as they are.
    more = data.few_shot("digits", classes=["5", "6", "7", "8", "9"], per_class=10, validation_per_class=20, batch_size=5)
    np.testing.assert_array_equal(data.as_numpy(more.validation)[0], data.as_numpy(target.validation)[0])
    train_small = {x.tobytes() for x in data.as_numpy(target.train)[0]}
    train_more = {x.tobytes() for x in data.as_numpy(more.train)[0]}
    assert train_small <= train_more and len(train_more) == 50
    # Another seed, another draw.
    other = data.few_shot("digits", classes=[5, 6, 7, 8, 9], per_class=3, validation_per_class=20, seed=7)
    assert {x.tobytes() for x in data.as_numpy(other.train)[0]} != train_small


def test_few_shot_of_a_dataset_keeps_its_settings(digits):
    loaded = data.load("digits", normalize="symmetric", batch_size=7)
    picked = data.few_shot(loaded, classes=[1, 0], per_class=4)
    assert picked.class_names == ["1", "0"] and picked.num_train == 8 and picked.validation is None
    assert picked.batch_size == 7 and picked.preprocessing["normalization"] == "symmetric"
    x, _ = data.as_numpy(picked.train)
    assert x.min() >= -1.0 and x.min() < 0  # symmetric: [-1, 1]
    with pytest.raises(ValueError, match=r"takes no `load` arguments with it. Received: \['image_size'\]"):
        data.few_shot(loaded, classes=[0], per_class=1, image_size=8)


def test_few_shot_class_selection_keeps_every_image():
    x, y = labelled_images(n=60)
    ds = data.few_shot((x, y), classes=[2, 0], per_class=None, validation_per_class=2, test_split=0)
    assert (ds.num_train, ds.num_validation, ds.num_test) == (36, 4, 0)
    xs, ys = data.as_numpy(ds.train)
    np.testing.assert_allclose(xs[ys == 0], 40 / 255)  # Class 2's images, relabelled 0.
    np.testing.assert_allclose(xs[ys == 1], 0.0)
    with pytest.raises(ValueError, match=r"at least 2 classes. Received: classes=\[2\]$"):
        data.few_shot((x, y), classes=[2], per_class=None)


def test_few_shot_names_every_class_that_is_short():
    x, y = labelled_images(n=60)
    y = np.where(np.arange(60) < 3, 1, y)  # 19, 22 and 19 images of classes 0, 1, 2
    with pytest.raises(ValueError) as info:
        data.few_shot((x, y), per_class=19, validation_per_class=1, test_split=0)
    assert str(info.value) == (
        "`few_shot` needs 20 images of each class (per_class=19 + validation_per_class=1) in the training pool "
        "of 'arrays'; these classes have fewer: '0' (label 0): 19, '2' (label 2): 19. "
        "Received: per_class=19, validation_per_class=1"
    )


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"classes": [0, 0], "per_class": 1}, "Class '0' is chosen twice"),
        ({"classes": [5], "per_class": 1}, r"Received: 5 in classes=\[5\]"),
        ({"classes": ["cat"], "per_class": 1}, "Unknown class name 'cat'"),
        ({"classes": "01", "per_class": 1}, "Received: classes='01'"),
        ({"per_class": 0}, "Received: per_class=0"),
        ({"per_class": 1, "validation_per_class": -1}, "Received: validation_per_class=-1"),
        ({"per_class": 1, "augment_policy": "x"}, r"Unknown arguments \['augment_policy'\]"),
    ],
)
def test_few_shot_argument_errors(kwargs, received):
    x, y = labelled_images(n=30)
    with pytest.raises(ValueError, match=received):
        data.few_shot((x, y), **kwargs)


def test_few_shot_draws_the_same_images_streamed_or_in_memory():
    import tensorflow as tf

    from kcnn.data import selection
    from kcnn.data.splits import _MemorySplit, _TFDSSplit

    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (700, 4, 4, 1), dtype=np.uint8)
    y = rng.integers(0, 5, 700)
    relabel = np.array([-1, 0, -1, 1, 2])
    memory = selection._draw([_MemorySplit(x, y)], relabel, 9, seed=11)
    streamed = selection._draw([_TFDSSplit(tf.data.Dataset.from_tensor_slices((x, y)), 700)], relabel, 9, seed=11)
    for (keys_m, images_m), (keys_s, images_s), label in zip(memory, streamed, (1, 3, 4)):
        np.testing.assert_array_equal(keys_m, keys_s)
        np.testing.assert_array_equal(images_m, images_s)
        assert len(images_m) == 9
        pool = {image.tobytes() for image in x[y == label]}
        assert {image.tobytes() for image in images_m} <= pool


def test_few_shot_of_a_tfds_source(tfds):
    with tfds.testing.mock_data(num_examples=20):
        counts = np.bincount(data.as_numpy(data.load("mnist", shuffle=False, validation_split=0).train)[1], minlength=10)
        classes = [int(c) for c in np.flatnonzero(counts >= 2)[:2]]
        ds = data.few_shot("mnist", classes=classes, per_class=1, validation_per_class=1)
        assert ds.class_names == [str(c) for c in classes]
        assert (ds.num_train, ds.num_validation) == (2, 2)
        _, y_test = data.as_numpy(ds.test)
        assert set(y_test) <= {0, 1}


# --------------------------------------------------------------------------
# data_options and image files


def test_check_data_options():
    assert data.check_data_options(None) == {}
    assert data.check_data_options({"image_size": 28, "download": True}) == {"image_size": (28, 28), "download": True}
    with pytest.raises(ValueError, match=r"Unknown `data_options` keys \['size'\].*Received: data_options=\{'size': 3\}"):
        data.check_data_options({"size": 3})
    with pytest.raises(ValueError, match=r"cannot set \['batch_size'\]: the TrainConfig does \(config.batch_size\)"):
        data.check_data_options({"batch_size": 3})
    with pytest.raises(ValueError, match=r"Received: image_size=\(0, 3\)"):
        data.check_data_options({"image_size": (0, 3)})
    with pytest.raises(ValueError, match="Received: channels=2"):
        data.check_data_options({"channels": 2})
    assert set(data.DATA_OPTIONS) <= set(inspect.signature(data.load).parameters)


def test_tiff_and_webp_images_are_read_and_other_files_named(tmp_path):
    """Issue 27: .tif and .webp files in class folders were skipped without a word."""
    rng = np.random.default_rng(3)
    pixels = {name: rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for name in ("a/0.tif", "a/1.webp", "b/0.TIFF", "b/1.png")}
    for name, array in pixels.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(array).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
    (tmp_path / "b" / "labels.csv").write_text("not an image")
    with pytest.warns(UserWarning, match=r"Not read under .*: 1 file\(s\) without an image extension .*\.webp\): .*labels\.csv"):
        ds = data.load(tmp_path, validation_split=0, test_split=0, shuffle=False, normalize=False)
    x, y = data.as_numpy(ds.train)
    np.testing.assert_array_equal(x, np.stack(list(pixels.values())).astype(np.float32))
    np.testing.assert_array_equal(y, [0, 0, 1, 1])


# Writes a folder of `n` 64x64 RGB PNGs and prints how much the process grows, per byte
# of decoded uint8 images held, when it loads that folder in memory, and when it loads
# arrays (after a small load of each, so that TensorFlow's one-time costs are paid).
# Measured here: 1.1 (both) with the images held once, 3.5 before (issue 27).
_MEMORY_SCRIPT = """
import gc, os, sys
import numpy as np
from PIL import Image
from kcnn import data

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def folder(root, n):
    for i in range(n):
        path = os.path.join(root, "ab"[i % 2], f"{i}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, compress_level=0)
    return root

def growth(source):
    gc.collect()
    before = rss()
    ds = data.load(source, batch_size=64)  # Its pipelines made, not run (their buffers come and go).
    gc.collect()
    held = [split.x for split in ds._source["splits"].values() if hasattr(split, "x")]
    assert all(x.dtype == np.uint8 for x in held)
    return (rss() - before) / sum(x.nbytes for x in held), ds

rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (8000, 64, 64, 3), dtype=np.uint8), np.arange(8000) % 4
warm = [growth(source) for source in (folder(sys.argv[1] + "-small", 20), (x[:64], y[:64]))]
print(growth(folder(sys.argv[1], 2000))[0], growth((x, y))[0])
"""


def test_in_memory_images_are_held_once_as_uint8(tmp_path):
    """Issue 27: loading 20,000 64x64 JPEGs instead of 4,000 grew the process by 650 MB
    where the images are 197 MB as uint8 (measured here: 3.5x the decoded size, of a
    folder or of arrays). The splits are views of one uint8 array, and the pipeline
    gathers from it, so a load now grows the process by about that size (1.1x)."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "pngs")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folder_growth, arrays_growth = map(float, done.stdout.split()[-2:])
    assert folder_growth < 1.5 and arrays_growth < 1.5, done.stdout
    # In this process: the carved splits of a folder share one buffer of exactly their bytes.
    ds = data.load(tmp_path / "pngs-small", batch_size=4, normalize=False, shuffle=False)
    splits = [ds._source["splits"][name].x for name in ("train", "validation", "test")]
    assert splits[0].base is not None and all(other.base is splits[0].base for other in splits[1:])
    assert sum(x.nbytes for x in splits) == 20 * 64 * 64 * 3 and {x.dtype for x in splits} == {np.dtype(np.uint8)}
    x, _ = data.as_numpy(ds.train)
    np.testing.assert_array_equal(x, splits[0].astype(np.float32))  # Converted in the pipeline.


def test_image_files_of_a_folder(tmp_path):
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"Not read under .*: 1 file\(s\) without an image extension .*notes\.txt'$"):
        assert data.image_files(tmp_path) == [str(tmp_path / "a.JPG"), str(tmp_path / "b.png")]
    assert data.image_files(tmp_path / "notes.txt") == [str(tmp_path / "notes.txt")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"Received: path=.*empty', which holds none"):
        data.image_files(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such file or folder"):
        data.image_files(tmp_path / "missing")


# --------------------------------------------------------------------------
# nothing lost, nothing silent: bad pixels, labels and files are refused or named


def test_non_finite_pixels_are_refused_naming_how_many_and_where(tmp_path):
    x, y = labelled_images(dtype=np.float32, scale=1 / 255.0)  # [0, 1] floats
    x[3, 1, 2] = np.nan
    x[7, 0, 5] = np.inf
    x[7, 4, 4] = -np.inf
    expected = (
        r"`x` holds 3 NaN or infinite pixel values, in 2 images: image 3 at \(row 1, column 2, channel 0\), "
        r"image 7 at \(row 0, column 5, channel 0\), image 7 at \(row 4, column 4, channel 0\)\..*"
        r"Received: x with 3 non-finite values$"
    )
    with pytest.raises(ValueError, match=expected):
        data.load((x, y))
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=labelled_images()[0], y_train=y, x_test=x[:8], y_test=y[:8])
    with pytest.raises(ValueError, match=r"`x_test` holds 3 NaN or infinite pixel values.*Received: x_test with 3"):
        data.load(str(path))
    preprocessing = data.load("digits").preprocessing
    with pytest.raises(ValueError, match=r"`images` holds 3 NaN.*Received: images with 3 non-finite values$"):
        data.preprocess_images(x[..., None], preprocessing)
    with pytest.raises(ValueError, match=r"image 1 at \(row 1, column 2, channel 0\).*Received: images\[1\] with 1"):
        data.preprocess_images([x[0], x[3]], preprocessing)


def test_the_clean_part_of_a_float_array_keeps_its_unit_scale():
    # The regression behind the NaN check: one NaN made np.max NaN, so [0, 1] floats
    # were read as 0..255 (every image black). Finite [0, 1] floats are still scaled.
    x, y = labelled_images(dtype=np.float32, scale=1 / 255.0)
    xs, ys = data.as_numpy(data.load((x, y), normalize=False, shuffle=False).test)
    np.testing.assert_allclose(xs, np.broadcast_to((20.0 * ys)[:, None, None, None], xs.shape), atol=1e-4)


@pytest.mark.parametrize(
    "dtype, value, received",
    [
        (np.int32, 999, r"Received: x with dtype int32, minimum 0, maximum 999$"),
        (np.uint16, 65535, r"16-bit pixels: divide them by 257.*Received: x with dtype uint16, minimum 0, maximum 65535$"),
        (np.float32, -1.5, r"Received: x with dtype float32, minimum -1.5, maximum 40.0$"),
        (np.float64, 300.0, r"Received: x with dtype float64, minimum 0.0, maximum 300.0$"),
    ],
)
def test_pixels_outside_0_255_are_refused(dtype, value, received):
    x, y = labelled_images(dtype=dtype)
    x[5, 2, 3] = value
    with pytest.raises(ValueError, match=r"Expected pixel values on the 0\.\.255 scale.*image 5 at \(row 2, column 3"):
        data.load((x, y))
    with pytest.raises(ValueError, match=received):
        data.load((x, y))
    with pytest.raises(ValueError, match=received.replace("x with", "images with")):
        data.preprocess_images(x, data.load("digits").preprocessing)


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    levels = np.arange(0, 256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(levels * 257).save(tmp_path / "wide.png")  # 0..65535
    with Image.open(tmp_path / "wide.png") as image:
        assert image.mode in ("I;16", "I")  # Pillow 11 and later read I;16, Pillow 10 I
    decoded = data.load_image(tmp_path / "wide.png")
    assert decoded.dtype == np.uint8 and decoded.shape == (16, 16, 1)
    np.testing.assert_array_equal(decoded[..., 0], levels)  # 71% of them used to read 255
    # Mode I (32-bit integers holding 16-bit values) the same.
    Image.fromarray((levels * 257).astype(np.int32)).save(tmp_path / "int.tiff")
    with Image.open(tmp_path / "int.tiff") as image:
        assert image.mode == "I"
    np.testing.assert_array_equal(data.load_image(tmp_path / "int.tiff")[..., 0], levels)
    for name in ("a", "b"):
        save(tmp_path / "folder" / name / "0.png", levels * 257)
        save(tmp_path / "folder" / name / "1.png", levels[::-1] * 257)
    ds = data.load(tmp_path / "folder", validation_split=0, test_split=0, shuffle=False, normalize=False)
    x, _ = data.as_numpy(ds.train)
    np.testing.assert_array_equal(x[0, ..., 0], levels)


def split_folder(root, splits=("train", "test"), classes=("cat", "dog"), counts=None):
    """root/<split>/<class>/<i>.png; every image filled with 10 * (split index * 10 + class index + 1)."""
    counts = counts or {"train": 6, "test": 3, "val": 2, "validation": 2}
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            for i in range(counts[split]):
                save(root / split / name / f"{i}.png", np.full((6, 6), 10 * (s * 10 + c + 1), np.uint8))


def test_a_folder_of_train_and_test_folders_gives_the_splits(tmp_path):
    split_folder(tmp_path)
    ds = data.load(tmp_path, validation_split=0.5, normalize=False, shuffle=False, batch_size=64)
    assert ds.class_names == ["cat", "dog"]  # Not ["test", "train"].
    assert (ds.num_train, ds.num_validation, ds.num_test) == (6, 6, 6)  # test/ as is; validation from train/
    x, y = data.as_numpy(ds.test)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(x[:, 0, 0, 0], [110, 110, 110, 120, 120, 120])  # test/'s images
    for split in (ds.train, ds.validation):
        x, y = data.as_numpy(split)
        np.testing.assert_array_equal(x[:, 0, 0, 0], 10 * (y + 1))  # train/'s images only

    # val/ (or validation/) is the validation split: nothing is carved out.
    other = tmp_path / "three"
    split_folder(other, splits=("train", "val", "test"))
    ds = data.load(other, normalize=False, shuffle=False)
    assert (ds.num_train, ds.num_validation, ds.num_test) == (12, 4, 6)
    x, y = data.as_numpy(ds.validation)
    np.testing.assert_array_equal(x[:, 0, 0, 0], 10 * (10 + y + 1))


def test_a_split_layout_whose_splits_disagree_is_refused(tmp_path):
    split_folder(tmp_path / "a")
    save(tmp_path / "a" / "test" / "bird" / "0.png", np.zeros((6, 6), np.uint8))
    with pytest.raises(ValueError, match=r"same class folders: 'test' has \['bird'\] that 'train' has not.*Received: source="):
        data.load(tmp_path / "a")
    split_folder(tmp_path / "b")
    save(tmp_path / "b" / "extra" / "0.png", np.zeros((6, 6), np.uint8))
    with pytest.raises(ValueError, match=r"split folders \['test', 'train'\] next to other folders \['extra'\]"):
        data.load(tmp_path / "b")
    split_folder(tmp_path / "c", splits=("val", "test"))
    with pytest.raises(ValueError, match=r"no train/ folder.*Received: source="):
        data.load(tmp_path / "c")


def test_one_outlier_cannot_set_the_folder_size(tmp_path):
    save(tmp_path / "a" / "0.png", np.zeros((28, 28), np.uint8))
    save(tmp_path / "b" / "0.png", np.zeros((600, 600), np.uint8))  # The outlier: half the images.
    with pytest.warns(UserWarning, match="differ in size"):
        ds = data.load(tmp_path, validation_split=0, test_split=0)
    assert ds.input_shape == (28, 28, 1)
    save(tmp_path / "a" / "1.png", np.zeros((28, 28), np.uint8))
    save(tmp_path / "b" / "1.png", np.zeros((30, 26), np.uint8))
    with pytest.warns(UserWarning, match="differ in size"):
        ds = data.load(tmp_path, validation_split=0, test_split=0)
    assert ds.input_shape == (28, 28, 1)  # (28, 28, 30, 600) -> 28; (26, 28, 28, 600) -> 28


# Pillow warns as it opens warned.png (over its limit, under twice it); kcnn then skips
# the file by name, which is what the test asserts.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_skipped_and_named(tmp_path, monkeypatch):
    for name in ("a", "b"):
        for i in range(3):
            save(tmp_path / name / f"{i}.png", np.zeros((8, 8), np.uint8))
    save(tmp_path / "a" / "warned.png", np.zeros((40, 40), np.uint8))  # over the limit: PIL warns
    save(tmp_path / "b" / "refused.png", np.zeros((60, 60), np.uint8))  # over twice the limit: PIL raises
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable image file\(s\).*warned\.png.*refused\.png"):
        ds = data.load(tmp_path, validation_split=0, test_split=0)
    assert ds.num_train == 6 and ds.input_shape == (8, 8, 1)
    assert [(os.path.basename(s["path"]), "MAX_IMAGE_PIXELS" in s["reason"]) for s in ds.skipped_files] == [
        ("warned.png", True),
        ("refused.png", True),
    ]
    with pytest.raises(ValueError, match=r"3600 pixels.*MAX_IMAGE_PIXELS = 1,000.*Received: path="):
        data.load_image(tmp_path / "b" / "refused.png")


def test_skipped_files_are_recorded_on_the_dataset(image_folder, digits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = data.load(image_folder, validation_split=0, test_split=0)
    assert len(ds.skipped_files) == 1
    assert ds.skipped_files[0]["path"] == str(image_folder / "dog" / "broken.jpeg")
    assert ds.skipped_files[0]["reason"].startswith("UnidentifiedImageError: cannot identify image file")
    assert json.loads(json.dumps(ds.skipped_files)) == ds.skipped_files
    assert data.few_shot(ds, per_class=2).skipped_files == ds.skipped_files
    assert ds.with_batch_size(3).skipped_files == ds.skipped_files
    assert digits.skipped_files == []


def test_labels_with_gaps_are_refused_with_the_labels_found():
    x, y = labelled_images(n=60, classes=9)
    y[10] = 999
    with pytest.raises(ValueError) as info:
        data.load((x, y))
    assert str(info.value) == (
        "Expected class labels 0..k-1: the labels found are [0, 1, 2, 3, 4, 5, 6, 7, 8, 999] (10 classes), "
        "which would make a 1000-class model. Relabel them 0..9, or pass one class name per label index up to 999 "
        "(`class_names`, a dict/.npz entry, of 1000 names) if that is intended. Received: labels up to 999"
    )
    # The names make it intended.
    names = [f"c{i}" for i in range(1000)]
    assert data.load({"x": x, "y": y, "class_names": names}).num_classes == 1000


def test_a_single_class_is_refused(tmp_path):
    x, _ = labelled_images(n=20)
    with pytest.raises(ValueError, match=r"at least 2 classes.*Received: labels \[0\]$"):
        data.load((x, np.zeros(20, int)))
    save(tmp_path / "only" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"at least 2 classes.*Received: source=.* with the class folders \['only'\]$"):
        data.load(tmp_path)


def test_test_classes_unseen_in_training_are_refused():
    x, y = labelled_images(n=30)  # classes 0, 1, 2
    with pytest.raises(ValueError, match=r"`y_test` holds classes the training labels have not: \[3\].*Received: y_test"):
        data.load(((x, y), (x[:4], np.array([0, 1, 2, 3]))))
