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

# TensorFlow and Keras leave millions of long-lived objects behind at import, and every
# `keras.backend.clear_session()` (keras-tuner calls it before each trial) runs a full
# garbage collection over them. Moving them to the permanent generation makes those
# collections cheap; it changes only how long the tests take.
gc.freeze()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
