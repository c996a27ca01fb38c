"""kcnn.tune.folds: the k-fold scores of the chosen model and the references on the
bundled digits (`--folds K`): the stratified split, the paired t interval, the runs,
their facts and lines, a resumed finish that reads them, and the refusal of other data."""

import json
import math
import re

import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import load_digits

from kcnn import data as kdata
from kcnn import tune
from kcnn.cli import main
from kcnn.tune import finish, folds, verdict
from kcnn.tune.selection import FinishRecord

DIGITS = load_digits().target


def test_the_folds_are_stratified_disjoint_and_cover_the_1797_digits():
    split = folds.fold_indices(DIGITS, 5, 1337)
    tests = [test for _, test in split]
    assert [len(test) for test in tests] == [360, 360, 359, 359, 359]
    # Each image in one test split exactly; a fold's pool is every other image.
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(1797))
    for pool, test in split:
        assert np.array_equal(np.sort(np.concatenate([pool, test])), np.arange(1797)) and not set(pool) & set(test)
    # Stratified: each class's images spread over the folds to one image (178 zeros: 36, 36, 36, 35, 35).
    per_class = np.array([np.bincount(DIGITS[test], minlength=10) for test in tests])
    assert np.array_equal(per_class.sum(axis=0), np.bincount(DIGITS))
    assert np.all(per_class.max(axis=0) - per_class.min(axis=0) <= 1)
    assert sorted(per_class[:, 0].tolist()) == [35, 35, 36, 36, 36]
    # The recipe's seed fixes the folds.
    again, other = folds.fold_indices(DIGITS, 5, 1337), folds.fold_indices(DIGITS, 5, 7)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(split, again, strict=True))
    assert not np.array_equal(split[0][1], other[0][1])


def test_a_folds_data_are_the_digits_as_the_finish_loads_them_its_pool_split_as_the_finishs():
    sources = folds._fold_sources((32, 32, 1), 5, 1337)
    first = kdata.load(sources[0], validation_split=0.1, seed=1337, normalize=None)
    # Fold 1's 360 images are the test split; its pool of 1,437 loses 10% of each class to validation.
    assert (first.num_test, first.num_validation, first.num_train) == (360, 143, 1294)
    assert first.input_shape == (32, 32, 1) and first.class_names == [str(c) for c in range(10)]
    # The finish's own test images (its 70/10/20 split), pixel for pixel, are among the folds'.
    finish_test, labels = kdata.as_numpy(kdata.load("digits", normalize=None).test)
    images = {x.tobytes(): y for source in sources for x, y in zip(source["x_test"], source["y_test"], strict=True)}
    assert len(images) == 1797
    assert all(images[x.astype(np.uint8).tobytes()] == y for x, y in zip(finish_test, labels, strict=True))


def test_the_paired_interval_is_students_t_on_the_per_fold_differences():
    chosen = [0.9889, 0.9917, 0.9861, 0.9916, 0.9889]
    lenet = [0.9861, 0.9861, 0.9833, 0.9916, 0.9833]
    facts = verdict.paired_difference(chosen, lenet)
    differences = np.subtract(chosen, lenet)
    reference = scipy.stats.ttest_rel(chosen, lenet)
    low, high = reference.confidence_interval(0.95)
    assert facts["difference"] == pytest.approx(differences.mean(), abs=1e-15)
    assert facts["error"] == pytest.approx(differences.std(ddof=1) / math.sqrt(5), rel=1e-12)
    assert facts["df"] == reference.df == 4 and facts["confidence"] == 0.95
    assert facts["interval"] == pytest.approx((high - low) / 2, rel=1e-12)
    # +0.34 points ±0.29: the chosen model beats LeNet-5 in every fold but one (a tie), and
    # the paired interval says so, where Welch's on the same values, blind to the folds'
    # common difficulty, says "within" (±0.43).
    assert (facts["verdict"], round(100 * facts["difference"], 2), round(100 * facts["interval"], 2)) == ("beats", 0.34, 0.29)
    assert 0 < low < high and verdict.difference(chosen, lenet)["verdict"] == "within"
    assert verdict.paired_difference(lenet, chosen)["verdict"] == "below"
    # Differences of either sign, +0.11 ±0.40: within.
    mixed = verdict.paired_difference(chosen, [0.9889, 0.9861, 0.9861, 0.9944, 0.9861])
    assert (mixed["verdict"], round(100 * mixed["difference"], 2), round(100 * mixed["interval"], 2)) == ("within", 0.11, 0.40)
    # The same difference in every fold has no spread: beyond it, as `difference` says of seeds.
    same = verdict.paired_difference([0.99, 0.98], [0.98, 0.97])
    assert (same["error"], same["interval"], same["verdict"]) == (0.0, 0.0, "beats")
    assert verdict.paired_difference([0.99, 0.98], [0.99, 0.98])["verdict"] == "within"
    with pytest.raises(ValueError, match=r"A paired difference needs two folds or more, as many of each. Received: 2 and 3 values"):
        verdict.paired_difference([0.9, 0.9], [0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match=r"Received: 1 and 1 values"):
        verdict.paired_difference([0.9], [0.9])


def record(name, kind, test, examples=360):
    return FinishRecord(name, kind, validation=None, validation_examples=None, test=test, test_examples=examples,
                        params=1, macs=1, path=None)  # fmt: skip


def test_the_fold_facts_and_lines_state_each_models_spread_and_the_paired_verdict(tmp_path):
    chosen = [0.9889, 0.9917, 0.9861, 0.9916, 0.9889]
    lenet = [0.9861, 0.9861, 0.9833, 0.9916, 0.9833]
    convnet = [0.9972, 0.9972, 0.9944, 0.9972, 0.9972]
    examples = [360, 360, 359, 359, 359]

    def runs_of(name, kind, tests):
        return [
            FinishRecord(name, kind, None, None, t, n, 1, 1, path=tmp_path / "finish" / f"{kind}_{name}_fold{k}")
            for k, (t, n) in enumerate(zip(tests, examples, strict=True), 1)
        ]

    runs = {("trial", "0003"): runs_of("0003", "trial", chosen), ("reference", "lenet5"): runs_of("lenet5", "reference", lenet),
            ("reference", "convnet"): runs_of("convnet", "reference", convnet)}  # fmt: skip
    best = record("0003", "trial", 0.99)
    references = [record("lenet5", "reference", 0.98), record("convnet", "reference", 0.99), record("vgg", "reference", None)]
    config = tune.SearchConfig(folds=5)
    facts = folds.fold_facts(best, references, runs, config, tmp_path)
    assert facts == {
        "folds": 5, "images": 1797, "stratified": True, "seed": 1337, "test": verdict.spread(chosen),
        "against": {
            "lenet5": {"reference": verdict.spread(lenet), **verdict.paired_difference(chosen, lenet)},
            "convnet": {"reference": verdict.spread(convnet), **verdict.paired_difference(chosen, convnet)},
        },
        "verdicts": {"lenet5": "beats", "convnet": "below"},
        "runs": {
            "trial 0003": [f"finish/trial_0003_fold{k}" for k in range(1, 6)],
            "lenet5": [f"finish/reference_lenet5_fold{k}" for k in range(1, 6)],
            "convnet": [f"finish/reference_convnet_fold{k}" for k in range(1, 6)],
        },
    }  # fmt: skip
    assert verdict.lines(best, [], folds=facts)[1:] == [
        "k-fold, 5 stratified folds of the 1,797 images, each the test split once, test accuracy: mean ±sample standard "
        "deviation (each fold's); per-fold differences' mean ±its 95% paired t interval",
        "  trial 0003: 98.94% ±0.23 (98.89 99.17 98.61 99.16 98.89)",
        "  lenet5: 98.61% ±0.34 (98.61 98.61 98.33 99.16 98.33); trial 0003 beats it by +0.34 ±0.29 points",
        "  convnet: 99.66% ±0.13 (99.72 99.72 99.44 99.72 99.72); trial 0003 is BELOW it by -0.72 ±0.19 points",
    ]
    # A reference chosen is not compared with itself; without fold runs, no facts.
    assert list(folds.fold_facts(references[0], references, runs, config, tmp_path)["against"]) == ["convnet"]
    assert folds.fold_facts(best, references, {}, config, tmp_path) is None


def test_the_folds_are_checked_and_refused_for_any_data_but_the_digits(tmp_path):
    for value in (1, -1, True, 2.0):
        with pytest.raises(ValueError, match=re.escape(f"`folds` must be 0 (none) or an int >= 2. Received: folds={value!r}")):
            tune.SearchConfig(folds=value)
    with pytest.raises(ValueError, match=r"pass top_k >= 1 with folds. Received: folds=2, top_k=0"):
        tune.SearchConfig(folds=2, top_k=0)
    assert tune.SearchConfig().folds == 0
    # Refused when the search starts: nothing is trained, no project is made.
    x, y = np.zeros((40, 8, 8, 1), np.uint8), np.arange(40) % 4
    for data, shown in (((x, y), "a tuple"), (str(tmp_path / "d.npz"), repr(str(tmp_path / "d.npz"))), (kdata.load("digits"), "a Dataset")):
        with pytest.raises(ValueError, match=re.escape(
            "k-fold scores (`folds`) are for the bundled digits only: data='digits', whose 1,797 images are trained "
            f"K times. Pass folds=0 for other data. Received: folds=2, data={shown}"
        )):  # fmt: skip
            tune.search("convnet", data, folds=2, directory=tmp_path / "p")
    with pytest.raises(ValueError, match=r"`folds` must be at most 174, the images of the digits' smallest class .* Received: folds=175"):
        tune.search("convnet", "digits", folds=175, directory=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_other_fold_settings_train_the_fold_runs_again_and_keep_the_finishs(tmp_path):
    root = tmp_path / "finish"
    for run in ("trial_0001", "trial_0001_seed1", "trial_0001_fold1", "reference_lenet5_fold2"):
        (root / run).mkdir(parents=True)
    finish.check_settings(root, {"folds": 2}, file=folds.FOLDS_FILE, pattern="*_fold*")
    finish.check_settings(root, {"folds": 2}, file=folds.FOLDS_FILE, pattern="*_fold*")  # The same: kept.
    assert sorted(p.name for p in root.iterdir()) == ["folds.json", "reference_lenet5_fold2", "trial_0001", "trial_0001_fold1", "trial_0001_seed1"]
    finish.check_settings(root, {"folds": 3}, file=folds.FOLDS_FILE, pattern="*_fold*")
    assert sorted(p.name for p in root.iterdir()) == ["folds.json", "trial_0001", "trial_0001_seed1"]
    assert json.loads((root / "folds.json").read_text()) == {"folds": 3}


def spread_text(values):
    mean, std = np.mean(values), np.std(values, ddof=1)
    return f"{100 * mean:.2f}% ±{100 * std:.2f} ({' '.join(f'{100 * v:.2f}' for v in values)})"


STATEMENTS = {"beats": "{} beats it by", "within": "{} is within the spread:", "below": "{} is BELOW it by"}


def test_tune_folds_trains_each_fold_once_states_the_verdict_and_reads_the_runs_when_resumed(tmp_path, capsys, monkeypatch):
    from kcnn import train

    # A trial that learns in one epoch (74% validation) beats the linear classifier (66%):
    # best/ holds the trial, compared with the reference fold by fold.
    project = tmp_path / "project"
    command = ["tune", "convnet", "--data", "digits", "--tuner", "random", "--max-trials", "1", "--max-epochs", "1", "--top-k", "1"]
    command += ["--finish-epochs", "1", "--seeds", "1", "--folds", "2", "--references", "mlp", "--target-macs", "none"]
    command += ["--image-size", "16"]
    for choice in ("depth=2", "filters=8", "hidden_units=32", "convs_per_stage=1", "strides=1", "kernel_size=3",
                   "batch_norm=False", "stage_dropout=0.0", "dropout=0.0", "learning_rate=3e-3"):  # fmt: skip
        command += ["--ranges", choice]
    command += ["--directory", str(project)]
    assert main(command) == 0
    out = capsys.readouterr().out
    best = json.loads((project / "best" / "metadata.json").read_text())["search"]
    assert (best["chosen"]["kind"], best["chosen"]["name"]) == ("trial", "0000")
    runs = {"trial 0000": "trial_0000", "mlp": "reference_mlp"}
    # Each model twice, fold k's 899 or 898 images its test split, the other fold its pool
    # (10% of it validation), at the search's image size, with the finish's recipe.
    tests = {}
    for model, run in runs.items():
        own = json.loads((project / "finish" / run / "metadata.json").read_text())
        for k in (1, 2):
            metadata = json.loads((project / "finish" / f"{run}_fold{k}" / "metadata.json").read_text())
            assert metadata["status"] == "completed" and metadata["config"] == own["config"]
            assert (metadata["search"]["fold"], metadata["search"]["folds"]) == (k, 2)
            dataset = metadata["dataset"]
            assert (dataset["num_test"], dataset["num_validation"], dataset["num_train"]) == ((899, 90, 808), (898, 90, 809))[k - 1]
            assert metadata["metrics"]["test"]["examples"] == dataset["num_test"] and dataset["input_shape"] == [16, 16, 1]
            tests.setdefault(model, []).append(metadata["metrics"]["test"]["accuracy"])
    # best/metadata.json: the fold facts next to the seeds' (none: one seed).
    over = best["over_folds"]
    paired = verdict.paired_difference(tests["trial 0000"], tests["mlp"])
    assert over == {
        "folds": 2, "images": 1797, "stratified": True, "seed": 1337, "test": verdict.spread(tests["trial 0000"]),
        "against": {"mlp": {"reference": verdict.spread(tests["mlp"]), **paired}}, "verdicts": {"mlp": paired["verdict"]},
        "runs": {model: [f"finish/{run}_fold1", f"finish/{run}_fold2"] for model, run in runs.items()},
    }  # fmt: skip
    assert "over_seeds" not in best
    # The command's last lines state them, after the lines of best/.
    lines = out.strip().splitlines()
    at = lines.index(next(line for line in lines if line.startswith("k-fold, ")))
    statement = {"beats": "trial 0000 beats it by", "within": "trial 0000 is within the spread:", "below": "trial 0000 is BELOW it by"}
    assert lines[at - 2].startswith("best/: trial 0000, retrained with the full recipe: ") and lines[at:] == [
        "k-fold, 2 stratified folds of the 1,797 images, each the test split once, test accuracy: mean ±sample standard "
        "deviation (each fold's); per-fold differences' mean ±its 95% paired t interval",
        f"  trial 0000: {spread_text(tests['trial 0000'])}",
        f"  mlp: {spread_text(tests['mlp'])}; {statement[paired['verdict']]} "
        f"{100 * paired['difference']:+.2f} ±{100 * paired['interval']:.2f} points",
        f"best model saved to {project / 'best'}",
        f"trials: {project / 'trials.csv'}  plot: {project / 'pareto.png'}",
    ]

    # Run again, one fold run having been killed in its first epoch (its metadata
    # "running", no checkpoint yet): that one alone is trained, in its folder, to the same
    # score; every other run is read, and the facts are the same.
    cut = project / "finish" / "reference_mlp_fold2"
    metadata = json.loads((cut / "metadata.json").read_text())
    (cut / "metadata.json").write_text(json.dumps({**metadata, "status": "running"}))
    fits = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *args, **kwargs: fits.append(kwargs["output"]) or real_fit(*args, **kwargs))
    assert main(command) == 0
    assert fits == [cut] and json.loads((cut / "metadata.json").read_text())["metrics"]["test"]["accuracy"] == tests["mlp"][1]
    assert json.loads((project / "best" / "metadata.json").read_text())["search"]["over_folds"] == over
