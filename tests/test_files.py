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
