"""Seeded training runs are reproducible: the same seeds give the same history."""

import csv

import keras

from kcnn import train


def history(run):
    with open(run.path / "history.csv") as file:
        # Every column but the wall-clock seconds.
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(file)]


def test_a_seeded_fit_with_the_default_augmentation_is_reproducible(tmp_path):
    config = train.TrainConfig(epochs=2, seed=1)
    assert config.augment == "shift"  # The default, whose random shifts once differed from run to run.
    runs = []
    for name in ("first", "second"):
        # The model's initial weights follow Keras' global seed (the command line sets it).
        keras.utils.set_random_seed(1)
        runs.append(train.fit("lenet5", "digits", config, output=tmp_path / name, verbose=0))
    first, second = (history(run) for run in runs)
    assert len(first) == 2 and first == second
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights(), strict=True):
        assert (a == b).all()
