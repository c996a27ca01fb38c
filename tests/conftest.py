import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
