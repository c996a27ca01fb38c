"""Training, evaluation, prediction and transfer learning for kcnn models.

    from kcnn import train
    result = train.fit("lenet5", "digits")            # -> saved_models/lenet5-digits-<time>/
    train.evaluate(result.path)                       # {'loss': ..., 'accuracy': 0.99, ...}
    train.predict(result.path, ["seven.png"], top_k=3)

    config = train.TrainConfig(epochs=10, optimizer="sgd", learning_rate=0.1, schedule="step")
    train.fine_tune("saved_models/resnet18-cifar10-.../", "tf_flowers", config, unfreeze="conv5")
    features = train.feature_extractor(vgg, "fc7").predict(images)   # VGG's fc2, 4096-d
    indices, distances = train.nearest_neighbours(features, features[0], k=5)

Library code here changes no process-wide state: mixed precision is applied per layer,
seeds only seed the data pipeline; the `kcnn` command line sets the global seed.

The modules, one concept each:

    config.py      TrainConfig (no TensorFlow: the command line reads it for its flags)
    distribute.py  what "auto" precision, XLA and strategy resolve to; the model prepared
    optimizers.py  Adam and AdamW updated by TensorFlow's fused kernel
    compile.py     optimizer, schedule, loss, metrics, compile (shared with the tuner)
    runs.py        the run folder, its files, whether it resumes
    metadata.py    a starting run's metadata.json
    random_state.py  the random generators' state a resumed run carries on from
    callbacks.py   the callbacks that write a run folder while it trains
    inputs.py      the model and the data of a run, fitted to each other
    phases.py      the loop that runs a run's phases, resuming from its checkpoint
    driver.py      fit and the driver it shares with fine_tune: set-up, phases, output
    inference.py   load, evaluate, predict, inference_model (the precision they compute in)
    segmentation.py  a model's task; per-pixel loss, metrics, evaluation, probabilities
    overlays.py    a segmentation model's masks and overlays of image files, as pictures
    transfer.py    fine_tune, replace_head, feature_extractor, nearest_neighbours
"""

from kcnn._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "kcnn.train.config",
    "compile_model": "kcnn.train.compile",
    "NonFiniteLossError": "kcnn.train.callbacks",
    "FolderInUseError": "kcnn._lock",
    "TrainResult": "kcnn.train.driver",
    "fit": "kcnn.train.driver",
    "evaluate": "kcnn.train.inference",
    "inference_model": "kcnn.train.inference",
    "load": "kcnn.train.inference",
    "predict": "kcnn.train.inference",
    "feature_extractor": "kcnn.train.transfer",
    "fine_tune": "kcnn.train.transfer",
    "nearest_neighbours": "kcnn.train.transfer",
    "replace_head": "kcnn.train.transfer",
    "set_trainable": "kcnn.train.transfer",
    "stage_prefix": "kcnn.train.transfer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
