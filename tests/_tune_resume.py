"""Helper of test_tune.py: a small random search that logs its trials and can hang.

    python _tune_resume.py PROJECT_DIR LOG_FILE HANG_AT [FRESH_DIR]

Appends one JSON line per trial start and end (with its score) to LOG_FILE. With
HANG_AT > 0, the HANG_AT-th trial logs "hang" after its first epoch and sleeps inside
an atomic write of the project's oracle.json (a temporary file half written), for the
test to kill it there; 0 never hangs. With FRESH_DIR, the same search then runs again
in that folder, uninterrupted, in the same process (its lines marked "fresh").
"""

import json
import sys
import time

import keras
import numpy as np

from kcnn import data as kdata
from kcnn import tune
from kcnn._files import atomic_path

project, log_path, hang_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
fresh = sys.argv[4] if len(sys.argv) > 4 else None
state = {"hang": False, "run": "resumed"}


def log(event, trial, **facts):
    with open(log_path, "a") as file:
        file.write(json.dumps({"event": event, "trial": trial, "run": state["run"], **facts}) + "\n")
        file.flush()


def on_trial(record):
    if record.status == "RUNNING":
        log("start", record.trial_id)
        state["hang"] = record.number == hang_at
    else:
        log("end", record.trial_id, score=record.score)


class Hang(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if state["hang"]:
            with atomic_path(f"{project}/oracle.json") as temporary:
                temporary.write_text('{"ongoing_trials": {"tuner0": ')
                log("hang", None)
                time.sleep(600)


rng = np.random.default_rng(0)
x = rng.integers(0, 256, (64, 16, 16, 1), dtype=np.uint8)
data = kdata.load((x, np.arange(64) % 4), batch_size=32, validation_split=0.25, test_split=0.0)
search = dict(
    tuner="random",
    max_trials=3,
    max_epochs=2,
    seed=7,
    top_k=0,
    references=None,  # no bar (test_tune_cost.py tests it): a trial's time less in each run
    ranges=dict(filters=(4, 8), hidden_units=8, convs_per_stage=1, depth=(2, 3), strides=1),
    on_trial=on_trial,
)
tune.search("convnet", data, directory=project, callbacks=[Hang()], **search)
if fresh:
    state["run"] = "fresh"
    tune.search("convnet", data, directory=fresh, **search)
