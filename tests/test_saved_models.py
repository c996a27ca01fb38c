"""A saved kcnn model reopens in a new process, whatever the entry point: the README's
`from kcnn import train; train.evaluate(run)`, every `kcnn.train` function that reads a
run folder, and plain Keras after `import kcnn`. Only a fresh interpreter can show
whether kcnn's custom layers are registered there, so each case runs in one (killed
after a timeout)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kcnn import data as kdata
from kcnn import train
from kcnn.train.driver import save_run

TIMEOUT = 180

# One small model per family with a custom layer: (registry name, builder arguments,
# input shape). Backbones without their 4096-wide tops keep the files small.
FAMILIES = {
    "resnet": ("resnet18", dict(include_top=False, pooling="avg"), (32, 32, 3)),  # FusedBatchNormalization
    "vgg_bn": ("vgg11_bn", dict(include_top=False, pooling="avg"), (32, 32, 3)),  # FusedBatchNormalization
    "alexnet": ("alexnet", dict(include_top=False, pooling="avg"), (67, 67, 3)),  # LocalResponseNormalization
    "googlenet": ("googlenet", dict(include_top=False, pooling="avg"), (32, 32, 3)),  # LocalResponseNormalization
    "lenet_paper": ("lenet5", dict(variant="paper", classes=3), (32, 32, 1)),  # Subsampling2D, EuclideanRBF, lecun_tanh
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved_run(request, tmp_path_factory):
    """A run folder (model.keras + metadata.json) of the family, on an .npz dataset."""
    import kcnn

    name, arguments, shape = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(36, *shape), dtype=np.uint8)
    np.savez(folder / "images.npz", x=x, y=np.arange(36) % 3)
    dataset = kdata.load(str(folder / "images.npz"), batch_size=8, seed=1)
    model = kcnn.create_model(name, input_shape=shape, **arguments)
    if not arguments.get("classes"):
        model = train.replace_head(model, 3)
    save_run(model, dataset, train.TrainConfig(epochs=1, batch_size=8, augment=None), folder / "run")
    return folder


def run_fresh(code, cwd):
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_keras_load_model_after_import_kcnn(saved_run):
    out = run_fresh(
        """
        import kcnn
        import keras

        model = keras.models.load_model("run/model.keras")
        print(sorted({type(layer).__module__ for layer in model.layers if type(layer).__module__.startswith("kcnn")}))
        """,
        saved_run,
    )
    assert "kcnn" in out


def test_every_kcnn_train_entry_point_reopens_the_run(saved_run):
    out = run_fresh(
        """
        import numpy as np
        from kcnn import train

        print("evaluate", train.evaluate("run")["examples"])
        model, metadata = train.load("run")
        images = np.zeros((2, *model.input_shape[1:]), np.uint8)
        print("predict", len(train.predict("run", images, top_k=1)))
        print("features", train.feature_extractor("run").output_shape[-1] > 0)
        config = train.TrainConfig(epochs=1, batch_size=8, augment=None)
        result = train.fine_tune("run", "images.npz", config, head_epochs=1, output="tuned", verbose=0)
        print("fine_tune", result.metrics["epochs"])
        """,
        saved_run,
    )
    assert out.split() == ["evaluate", "6", "predict", "2", "features", "True", "fine_tune", "1"]


def test_keras_first_then_kcnn_also_registers(tmp_path):
    import kcnn

    kcnn.alexnet(include_top=False, input_shape=(67, 67, 3)).save(tmp_path / "alexnet.keras")
    out = run_fresh(
        """
        import keras
        import kcnn

        print(keras.models.load_model("alexnet.keras").get_layer("norm1").__class__.__name__)
        """,
        tmp_path,
    )
    assert out.strip() == "LocalResponseNormalization"
