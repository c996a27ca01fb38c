import gc
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No test reaches a network, nor the user's weights cache: a test that serves weight
# files from local file:// URLs lifts KCNN_OFFLINE itself (tests/fixtures/local_weights.py).
os.environ["KCNN_OFFLINE"] = "1"
os.environ["KCNN_HOME"] = tempfile.mkdtemp(prefix="kcnn-home-")

import keras  # noqa: F401
import numpy as np
import pytest
import tensorflow  # noqa: F401
from fixtures import eager_steps

# TensorFlow and Keras leave millions of long-lived objects behind at import, and every
# `keras.backend.clear_session()` (keras-tuner calls it before each trial) runs a full
# garbage collection over them. Moving them to the permanent generation makes those
# collections cheap; it changes only how long the tests take.
gc.freeze()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# In-process tests run Keras' train, test and predict steps eagerly: the same Python
# code, without tracing it into a graph. Tracing is most of what a tiny `fit` costs
# here (a 2-step LeNet-5 fit takes 1.5 s compiled and 0.8 s eager; the 20 modules of
# in-process training and search tests take 910 CPU-seconds instead of 1,024, a search
# test half of its time), and what the tests check (weights, resumes, files, records)
# does not depend on it (tests/fixtures/eager_steps.py). The compiled path users run is
# still tested: by every test that starts a process (the notebooks, the README's
# blocks, `kcnn` commands in a fresh interpreter, search and training workers; in
# notebook 02, whose trainings run dozens of steps, eager steps cost 83 CPU-seconds
# against 47 compiled), by tests marked `compiled` (reproducibility,
# distribution, precision, optimizers) or training enough steps that compiling pays
# (int8 calibration on the digits, AlexNet's fit), and by the whole suite with `--compiled`.
def pytest_addoption(parser):
    parser.addoption(
        "--compiled",
        action="store_true",
        help="compile every in-process Keras model's steps (tf.function), as a user's run does",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "compiled: run this test's Keras steps compiled (tf.function), not eagerly")


eager_steps.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before the test's fixtures are made, so that a module fixture's training runs
    # as its first test does.
    eager_steps.compiled = item.config.getoption("--compiled") or item.get_closest_marker("compiled") is not None
