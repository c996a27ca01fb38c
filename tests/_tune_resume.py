"""Helper of test_tune.py: a small random search that logs its trials and can hang.

    python _tune_resume.py PROJECT_DIR LOG_FILE HANG_AT

Appends one JSON line per trial start and end to LOG_FILE. With HANG_AT > 0, the
HANG_AT-th trial logs "hang" after its first epoch and sleeps, for the test to kill it
mid-trial; 0 never hangs.
"""

import json
import sys
import time

import keras
import numpy as np

from kcnn import data as kdata
from kcnn import tune

project, log_path, hang_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = {"hang": False}


def log(event, trial):
    with open(log_path, "a") as file:
        file.write(json.dumps({"event": event, "trial": trial}) + "\n")
        file.flush()


def on_trial(record):
    if record.status == "RUNNING":
        log("start", record.trial_id)
        state["hang"] = record.number == hang_at
    else:
        log("end", record.trial_id)


class Hang(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if state["hang"]:
            log("hang", None)
            time.sleep(600)


rng = np.random.default_rng(0)
x = rng.integers(0, 256, (64, 16, 16, 1), dtype=np.uint8)
data = kdata.load((x, np.arange(64) % 4), batch_size=32, validation_split=0.25, test_split=0.0)
tune.search(
    "convnet",
    data,
    tuner="random",
    max_trials=4,
    max_epochs=2,
    seed=7,
    top_k=0,
    directory=project,
    ranges=dict(filters=(4, 8), hidden_units=8, convs_per_stage=1, depth=(2, 3), strides=1),
    callbacks=[Hang()],
    on_trial=on_trial,
)
