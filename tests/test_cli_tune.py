"""`kcnn tune`: flags, progress lines and results table. A distributed search with real
processes (a chief and two workers on 127.0.0.1) runs in tests/test_tune_workers.py."""

import json
import re
import socket

import numpy as np
import pytest

from kcnn.cli import main

# A space of tiny models that always fit 16x16 inputs, so every trial trains.
TINY = [
    "--ranges",
    "filters=4,8",
    "--ranges",
    "hidden_units=8",
    "--ranges",
    "convs_per_stage=1",
    "--ranges",
    "depth=2,3",
    "--ranges",
    "strides=1",
]


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=rng.integers(0, 256, (64, 16, 16, 1), dtype=np.uint8), y=np.arange(64) % 4)
    return str(path)


def test_tune_flags_map_onto_the_configs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--tuner",
        "--max-trials",
        "--max-epochs",
        "--max-params",
        "--max-macs",
        "--project",
        "--chief",
        "--worker",
        "--overwrite",
        "--top-k",
        "--finish-epochs",
        "--seeds",
        "--references",
        "--lr",
        "--batch-size",
        "--ranges",
    ):
        assert flag in text, flag
    # The search sets each trial's epochs and early stopping: no training flags for them.
    assert "--epochs" not in text.replace("--max-epochs", "")


def test_tune_help_shows_each_default_once():
    from kcnn.cli import build_parser

    tune = build_parser()._subparsers._group_actions[0].choices["tune"]
    for action in tune._actions:
        assert (action.help or "").count("default") <= 1, action.help
    assert tune._option_string_actions["--max-trials"].help == (
        "most trials (default: the tuner's own budget; 10 for random/bayesian)"
    )
    assert tune._option_string_actions["--tuner"].help == "search algorithm (default: hyperband)"


class _Stop(Exception):
    """Raised where the search would start: the data is loaded, nothing is searched."""


def test_tune_data_flags_reach_the_loader(npz, monkeypatch):
    from kcnn.tune import driver

    seen = {}

    def record(space, data, config, ranges):
        seen["data"] = data
        raise _Stop

    monkeypatch.setattr(driver, "_make_space", record)
    with pytest.raises(_Stop):
        main(["tune", "--data", npz, "--image-size", "8x12", "--channels", "3"])
    assert seen["data"].input_shape == (8, 12, 3)
    with pytest.raises(_Stop):
        main(["tune", "--data", npz])
    assert seen["data"].input_shape == (16, 16, 1)  # The source's own size


def test_tune_download_offline_fails_fast_with_the_ways_out(tmp_path, monkeypatch, capsys):
    tried = []

    def lookup(host, port, *args, **kwargs):
        tried.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: lookup(*address))
    code = main(["tune", "--data", "mnist", "--download", "--data-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert tried == ["storage.googleapis.com"]
    assert "kcnn tune: error: Cannot download the TFDS dataset 'mnist'" in err
    assert repr(str(tmp_path)) in err and "`--download --data-dir DIR`" in err


def test_tune_prints_a_line_per_trial_a_results_table_and_keeps_the_reference_no_trial_beats(tmp_path, capsys, caplog):
    # Images whose class is the bright quadrant, which LeNet-5 learns; trials that cannot
    # learn (learning rate 1e-7). The reference competes for best/ with the retrained trial.
    rng = np.random.default_rng(0)
    y = np.arange(96) % 4
    x = rng.integers(0, 60, (96, 32, 32, 1), dtype=np.uint8)
    for image, label in zip(x, y, strict=True):
        row, column = divmod(int(label), 2)
        image[16 * row : 16 * row + 16, 16 * column : 16 * column + 16] += 150
    np.savez(tmp_path / "quadrants.npz", x=x, y=y)
    project = tmp_path / "project"
    command = ["tune", "convnet", "--data", str(tmp_path / "quadrants.npz"), "--tuner", "random", "--max-trials", "2"]
    command += ["--max-epochs", "1", "--top-k", "1", "--finish-epochs", "3", "--seeds", "1", "--references", "lenet5", "--target-macs", "none"]
    for choice in ("learning_rate=1e-7", "filters=4,8", "hidden_units=8", "convs_per_stage=1", "depth=2", "strides=2"):
        command += ["--ranges", choice]
    code = main([*command, "--directory", str(project)])
    out = capsys.readouterr().out
    assert code == 0, out
    # Each trial's line once, through the `kcnn` logger as in Python (stderr, "kcnn: ..."), not printed.
    progress = "\n".join(r.getMessage() for r in caplog.records if r.name == "kcnn" and r.levelname == "INFO")
    assert re.search(
        r"^trial 1/2 \(0+\)  val_accuracy \d\.\d{4}  best \d\.\d{4}  [\d.]+[KM]? params  [\d.]+[KM]? MACs  [\d.]+s$",
        progress,
        re.M,
    )
    assert len(re.findall(r"^trial 2/2 \(0*1\)  ", progress, re.M)) == 1
    assert not re.search(r"^trial \d/2", out, re.M)
    assert re.search(r"^trial +val_accuracy +params +MACs +seconds  hyperparameters$", out, re.M)
    # The finish: the best trial retrained with the full recipe and the reference, ranked together.
    assert re.search(r"^retrained with the full recipe, and the references", out, re.M)
    assert re.search(r"^ +\*1 lenet5 \(ref\) +100\.00 ±\d+\.\d\d +\d+\.\d\d ±\d+\.\d\d ", out, re.M)
    assert re.search(r"^ +2 trial \d{4} +\d+\.\d\d ±\d+\.\d\d +\d+\.\d\d ±\d+\.\d\d ", out, re.M)
    assert re.search(r"^best trial \d{4}: val_accuracy \d\.\d{4}, test accuracy \d\.\d{4} after the full recipe$", out, re.M)
    # The last lines say what best/ holds: the reference, which no retrained trial beat.
    last = out.strip().splitlines()[-3:]
    assert re.fullmatch(
        r"best/: the reference lenet5 \(no retrained trial beat it\): validation 100\.00% ±\d+\.\d\d, test \d+\.\d\d% ±\d+\.\d\d",
        last[0],
    )
    assert last[1] == f"best model saved to {project / 'best'}"
    metadata = json.loads((project / "best" / "metadata.json").read_text())
    assert metadata["model"]["name"] == "lenet5" and metadata["search"]["chosen"]["kind"] == "reference"
    assert metadata["search"]["trial_id"] is None and metadata["search"]["best_trial"]["trial_id"] in ("0000", "0001")
    assert (project / "best" / "model.keras").is_file()


def test_tune_with_a_cost_term_prints_the_score_next_to_the_objective(npz, tmp_path, capsys, caplog):
    project = tmp_path / "project"
    command = ["tune", "convnet", "--data", npz, "--tuner", "random", "--max-trials", "1", "--max-epochs", "1"]
    command += ["--top-k", "0", "--references", "none", "--target-macs", "100", "--directory", str(project), *TINY]
    assert main(command) == 0
    out = capsys.readouterr().out
    progress = "\n".join(r.getMessage() for r in caplog.records if r.name == "kcnn")
    # Every configuration costs more than 100 MACs: the score is charged, and shown.
    line = re.search(r"^trial 1/1 \(0+\)  val_accuracy (\d\.\d{4}) \(score (\d\.\d{4})\)  best (\d\.\d{4})  ", progress, re.M)
    assert line and float(line.group(2)) < float(line.group(1)) and line.group(3) == line.group(2), out
    assert re.search(r"^trial +val_accuracy +score +params +MACs +seconds  hyperparameters$", out, re.M)
    value, score = line.group(1), line.group(2)
    assert re.search(rf"^best trial 0+: val_accuracy {value} \(score {score}\)$", out, re.M), out
    assert "  cost term: scores weighed by (MACs / 100) ** -0.07 above that target (--target-macs)" in out
    assert "bar:" not in out  # The target is given, not a reference's: no bar.


def test_tune_errors_are_reported(npz, tmp_path, capsys):
    assert main(["tune", "convnet", "--data", npz, "--ranges", "depth", "--directory", str(tmp_path / "p")]) == 2
    assert "kcnn tune: error: `--ranges` takes NAME=CHOICES" in capsys.readouterr().err
    assert main(["tune", "convnet", "--data", npz, "--ranges", "kernel=3", "--directory", str(tmp_path / "p")]) == 2
    assert "Unknown ranges for the 'convnet' space: ['kernel']" in capsys.readouterr().err
    assert main(["tune", "--data", npz, "--worker", "w1"]) == 2
    assert "A worker needs the chief's address" in capsys.readouterr().err
