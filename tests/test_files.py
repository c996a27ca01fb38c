import os
import re

import numpy as np
import pytest

from kcnn._files import atomic_write, read_json, write_json


def test_json_round_trips_numpy_scalars_tuples_and_paths(tmp_path):
    path = tmp_path / "deep" / "folder" / "values.json"  # parents are created
    write_json(path, {"accuracy": np.float32(0.5), "shape": (32, 32), "path": tmp_path})
    assert read_json(path) == {"accuracy": 0.5, "shape": [32, 32], "path": os.fspath(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["values.json"]  # no temporary file left


def test_missing_json_is_none_and_corrupt_json_names_the_file(tmp_path):
    assert read_json(tmp_path / "absent.json") is None
    atomic_write(tmp_path / "broken.json", '{"epoch": 3')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        read_json(tmp_path / "broken.json")


def test_unserializable_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="Not JSON-serializable"):
        write_json(tmp_path / "x.json", {"model": object()})
    assert not (tmp_path / "x.json").exists()


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    from kcnn._files import atomic_path

    path = tmp_path / "model.keras"
    path.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path and temporary.name.startswith(".")
        assert str(os.getpid()) in temporary.name  # two processes never share one
        temporary.write_text("half")
        raise RuntimeError("killed midway")
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    with atomic_path(path) as temporary:
        temporary.write_text("new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_temporary_names_keep_the_suffix_keras_picks_its_format_by(tmp_path):
    from kcnn._files import atomic_path, is_temporary

    for name, suffix in (("epoch-0003.weights.h5", ".weights.h5"), ("model.keras", ".keras"), ("oracle.json", ".json")):
        with atomic_path(tmp_path / name) as temporary:
            assert temporary.name.endswith(suffix) and is_temporary(temporary) and not is_temporary(tmp_path / name)
            temporary.write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003.weights.h5", "model.keras", "oracle.json"]


def test_an_empty_json_file_is_reported_as_empty(tmp_path):
    from kcnn._files import CorruptFileError

    (tmp_path / "oracle.json").write_text("")
    with pytest.raises(CorruptFileError, match=r"oracle\.json is empty$"):
        read_json(tmp_path / "oracle.json")


def test_a_digest_tells_a_complete_file_from_a_truncated_or_damaged_one(tmp_path):
    from kcnn._files import check_digest, file_digest

    path = tmp_path / "weights.h5"
    path.write_bytes(b"0123456789" * 1000)
    digest = file_digest(path)
    assert digest["size"] == 10_000 and check_digest(path, digest) is None
    path.write_bytes(b"0123456789" * 999)
    assert check_digest(path, digest) == "weights.h5 has 9,990 bytes where 10,000 were written"
    path.write_bytes(b"1123456789" + b"0123456789" * 999)
    assert check_digest(path, digest) == "weights.h5 is damaged (its SHA-256 differs from the one recorded)"
    path.unlink()
    assert check_digest(path, digest) == "weights.h5 is missing"


def _damaged_keras_files(folder):
    """A LeNet-5 .keras file damaged four ways: {name: (path, what the message says)}."""
    import io
    import zipfile

    from kcnn import lenet5

    good = folder / "good.keras"
    lenet5(classes=3).save(good)
    raw = good.read_bytes()

    def rewritten(change):
        buffer = io.BytesIO()
        with zipfile.ZipFile(good) as source, zipfile.ZipFile(buffer, "w") as target:
            for name in source.namelist():
                content = change(name, source.read(name))
                if content is not None:
                    target.writestr(name, content)
        return buffer.getvalue()

    with zipfile.ZipFile(good) as archive:
        weights = archive.getinfo("model.weights.h5")
    flipped = bytearray(raw)
    # A byte in the middle of the weights' data: the archive's CRC-32 no longer matches.
    flipped[weights.header_offset + 100 + weights.compress_size // 2] ^= 0xFF
    damages = {
        "truncated": (raw[:1000], r"it is no zip archive \(1,000 bytes\)"),
        "flipped": (bytes(flipped), r"its archive member model\.weights\.h5 is damaged"),
        "no_config": (rewritten(lambda name, data: None if name == "config.json" else data), r"its archive lacks config\.json"),
        "bad_config": (rewritten(lambda name, data: b"{" if name == "config.json" else data), r"its config\.json is not valid JSON"),
    }
    files = {}
    for name, (content, problem) in damages.items():
        path = folder / name / "model.keras"  # as in a run folder
        path.parent.mkdir()
        path.write_bytes(content)
        files[name] = (path, problem)
    return files


def test_a_damaged_keras_file_is_named_by_every_loader(tmp_path):
    """Keras says "File not found" of a truncated .keras file, and raises zipfile's,
    json's or a bare KeyError for a damaged archive: each loader that takes a .keras
    path names the file and what is wrong with it."""
    from kcnn import lenet5, train, weights
    from kcnn._files import CorruptFileError, load_keras_model

    target = lenet5(classes=3)
    loaders = {
        "load_keras_model": load_keras_model,
        "train.load": train.load,
        "train.evaluate": lambda path: train.evaluate(path, data=None),
        "train.fine_tune": lambda path: train.fine_tune(path, data=None, output=tmp_path / "never"),
        "weights.transfer_weights": lambda path: weights.transfer_weights(path, target),
        "weights.load_weights": lambda path: weights.load_weights(target, path),
    }
    for name, (path, problem) in _damaged_keras_files(tmp_path).items():
        for loader_name, loader in loaders.items():
            with pytest.raises(CorruptFileError) as refused:
                loader(path)
            message = str(refused.value)
            assert message.startswith(f"{path} is not a readable .keras model: "), (name, loader_name, message)
            assert re.search(problem + r".*, so it is truncated, emptied or damaged\. ", message), (name, loader_name, message)
            assert message.endswith(f"Received: path={os.fspath(path)!r}"), (name, loader_name, message)
    assert not (tmp_path / "never").exists()
    # A whole file loads, and an error that is not damage stays Keras' own.
    assert load_keras_model(tmp_path / "good.keras").count_params() == lenet5(classes=3).count_params()
    with pytest.raises(ValueError, match="File not found"):
        load_keras_model(tmp_path / "absent.keras")
