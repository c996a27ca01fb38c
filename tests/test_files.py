import os

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
