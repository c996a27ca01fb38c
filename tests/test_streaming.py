"""Image folders too big for memory stream from their files: the path chosen by size,
reported, and giving the same batches as the in-memory path."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kcnn import data
from kcnn.data import folder_source, pipeline

CLASSES = ("cat", "dog", "owl")

# The folder mixes two image sizes on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The images under .* differ in size")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 10 images of mixed sizes and modes (grey PNG, RGB JPEG), one of
    them unreadable."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(10):
            height, width = (16, 16) if i == 9 else (20, 24) if i % 3 else (26, 18)  # 16x16: not resized
            if i % 2:
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / name / f"{i:02d}.jpg", quality=90)
            else:
                pixels = rng.integers(40 * c, 40 * c + 100, (height, width), dtype=np.uint8)
                Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    (root / "owl" / "broken.png").write_bytes(b"not an image")
    return root


def _epochs(dataset, count):
    return [[(x.copy(), y.copy()) for x, y in dataset.train.as_numpy_iterator()] for _ in range(count)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


def test_streamed_folder_gives_the_in_memory_batches(folder, monkeypatch, caplog):
    options = dict(image_size=16, batch_size=4, augment="shift", seed=5, validation_split=0.2, test_split=0.2)
    with pytest.warns(UserWarning, match="unreadable"):
        memory = data.load(folder, **options)
    # Just above the threshold: the folder's 30 readable images decoded at 16x16x3.
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT", 30 * 16 * 16 * 3 - 1)
    with caplog.at_level(logging.INFO, logger="kcnn"), pytest.warns(UserWarning, match="unreadable"):
        streamed = data.load(folder, **options)
    assert not memory.streaming and streamed.streaming
    assert "streamed from the files" in caplog.text and "30 images" in caplog.text
    assert (streamed.num_train, streamed.num_validation, streamed.num_test) == (
        memory.num_train,
        memory.num_validation,
        memory.num_test,
    )
    assert streamed.input_statistics == memory.input_statistics
    assert streamed.skipped_files == memory.skipped_files
    # Shuffled and augmented anew each epoch, the same way on both paths.
    first, second = _epochs(streamed, 2)
    _assert_same_batches(first, _epochs(memory, 1)[0])
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    for split in ("validation", "test"):
        _assert_same_batches(
            list(getattr(streamed, split).as_numpy_iterator()), list(getattr(memory, split).as_numpy_iterator())
        )
    # Re-batched without decoding anything up front, still streamed.
    assert streamed.with_batch_size(8).streaming


def test_at_the_threshold_the_folder_stays_in_memory(folder, monkeypatch):
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT", 30 * 16 * 16 * 3)
    with pytest.warns(UserWarning, match="unreadable"):
        assert not data.load(folder, image_size=16).streaming
    with pytest.warns(UserWarning, match="unreadable"):
        forced = data.load(folder, image_size=16, stream=True, augment=False, shuffle=False)
    assert forced.streaming
    # few_shot reads a streamed pool too.
    few = data.few_shot(forced, per_class=2, seed=1)
    assert few.num_train == 2 * len(CLASSES)


def test_a_streamed_file_that_fails_to_decode_stops_the_epoch_naming_it(tmp_path, monkeypatch):
    """A file whose header was read at load time but whose pixels are truncated was
    dropped while training, leaving the split's length unknown: `fit` then counted
    the epochs otherwise in one process and in a cluster, and on resuming (issue 27).
    It now stops the iteration, naming the file; the length is known."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    for name in CLASSES[:2]:
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.jpg")
    whole = (tmp_path / "dog" / "2.jpg").read_bytes()
    (tmp_path / "dog" / "2.jpg").write_bytes(whole[: len(whole) * 3 // 4])  # Its header intact.
    options = dict(stream=True, image_size=8, batch_size=2, validation_split=0, test_split=0, shuffle=False)
    # Decoded for the input statistics at load time (every training file of a small
    # folder): skipped and named there, as a file whose header fails.
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        ds = data.load(tmp_path, **options)
    assert [entry["path"] for entry in ds.skipped_files] == [str(tmp_path / "dog" / "2.jpg")] and ds.num_train == 5
    # Met while training only (the sample is one image here): the run stops, naming it.
    monkeypatch.setattr(folder_source, "STREAM_SAMPLE", 1)
    ds = data.load(tmp_path, **options)
    assert ds.skipped_files == [] and int(ds.train.cardinality()) == 3
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Could not read an image from .*2\.jpg.* stream=False"):
        data.as_numpy(ds.train)


def test_stream_must_be_a_bool_or_auto(folder):
    with pytest.raises(ValueError, match="`stream` must be True, False or 'auto'. Received: stream='yes'"):
        data.load(folder, stream="yes")


@pytest.mark.parametrize("above", [False, True])
def test_tfds_split_is_cached_in_memory_only_when_it_fits(above, tmp_path, monkeypatch, caplog):
    tfds = pytest.importorskip("tensorflow_datasets")
    from kcnn.data import tfds_source

    # The mock serves 20 MNIST examples per split: 20 x 28 x 28 x 1 bytes decoded.
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT", 20 * 28 * 28 - above)
    options = dict(image_size=None, channels=None, validation_split=0.1, test_split=0.1, seed=0)
    with tfds.testing.mock_data(num_examples=20), caplog.at_level(logging.INFO, logger="kcnn"):
        splits = tfds_source._load_tfds("mnist", data_dir=tmp_path, download=False, cache=True, **options)
        for name in ("train", "validation", "test"):
            split = splits[name]
            assert split.size == 20
            # Above the limit the split is read through uncached; at the limit it is cached.
            assert (split.ds is split.uncached) == above
            assert (type(split.ds).__name__ == "CacheDataset") != above
            cached = list(split.ds.as_numpy_iterator())
            for (x, y), (x0, y0) in zip(cached, split.uncached.as_numpy_iterator(), strict=True):
                np.testing.assert_array_equal(x, x0)
                assert y == y0
    assert ("not cached in memory" in caplog.text) == above
    assert caplog.text.count("not cached in memory") == (3 if above else 0)


class _InterruptMidEpoch(keras.callbacks.Callback):
    """Stops the run after the first batch of epoch `at` (from 0), as a kill would: the
    epochs before it are committed, the one begun is lost."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.at:
            raise KeyboardInterrupt


# Keras' warning at the end of every epoch of a dataset of unknown length.
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_a_run_on_streamed_data_of_unknown_length_resumes_as_the_uninterrupted_one(folder, tmp_path):
    """On a training split of unknown length Keras starts one iterator an epoch where
    it starts two for a known length (`fit_iterations_per_epoch`): the resumed run
    must move the shuffle and the augmentation on by that count. The convnet's
    dropout draws its masks from a generator whose state the checkpoint carries."""
    import dataclasses

    from kcnn import convnet, train

    def streamed():
        keras.utils.set_random_seed(3)  # as a new process of the command line would
        with pytest.warns(UserWarning, match="unreadable"):
            loaded = data.load(folder, image_size=8, batch_size=8, stream=True, augment="shift", seed=5, test_split=0)
        # Streamed files are read past unreadable ones, which leaves the length unknown;
        # the filter keeps it unknown whatever the pipeline learns to say.
        loaded = dataclasses.replace(loaded, train=loaded.train.filter(lambda x, y: True))
        assert loaded.streaming and int(loaded.train.cardinality()) == tf.data.UNKNOWN_CARDINALITY
        model = convnet(filters=(4,), hidden_units=(), dropout=0.5, input_shape=(8, 8, 3), classes=3)
        return loaded, model

    config = train.TrainConfig(epochs=2, batch_size=8, steps_per_execution=1, warmup_epochs=0.0, seed=5)

    def fit(output, callbacks=()):
        loaded, model = streamed()
        return train.fit(model, loaded, config, output=tmp_path / output, callbacks=callbacks, verbose=0)

    whole = fit("whole")
    with pytest.raises(KeyboardInterrupt):
        fit("resumed", [_InterruptMidEpoch(1)])
    resumed = fit("resumed")
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    drop_seconds = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert drop_seconds(resumed.history) == drop_seconds(whole.history)
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
