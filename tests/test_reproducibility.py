"""Seeded training runs are reproducible: the same seeds give the same history."""

import csv

import keras
import pytest

from kcnn import train

# Reproducibility is claimed for the run a user makes: compiled steps.
pytestmark = pytest.mark.compiled


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


class _Interrupt(keras.callbacks.Callback):
    """Stops the run when the epoch `at` (from 0) begins: the epochs before it are done."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_a_resumed_run_is_the_uninterrupted_run(tmp_path):
    # The resumed process starts tf.data's epoch count afresh: the trainer moves the
    # shuffling and the augmentation on to the epoch it resumes at.
    from kcnn import data as kdata

    def digits():
        keras.utils.set_random_seed(1)  # as a new process of the command line would
        return kdata.load("digits", augment="shift", seed=1, batch_size=64)

    config = train.TrainConfig(epochs=3, seed=1)
    whole = train.fit("lenet5", digits(), config, output=tmp_path / "whole", verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train.fit("lenet5", digits(), config, output=tmp_path / "resumed", callbacks=[_Interrupt(2)], verbose=0)
    resumed = train.fit("lenet5", digits(), config, output=tmp_path / "resumed", verbose=0)
    assert history(resumed) == history(whole)
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights(), strict=True):
        assert (a == b).all()
