"""Training, evaluation, prediction and transfer learning for kcnn models.

    from kcnn import train
    result = train.fit("lenet5", "digits")            # -> saved_models/lenet5-digits-<time>/
    train.evaluate(result.path)                       # {'loss': ..., 'accuracy': 0.99, ...}
    train.predict(result.path, ["seven.png"], top_k=3)

    config = train.TrainConfig(epochs=10, optimizer="sgd", learning_rate=0.1, schedule="step")
    train.fine_tune("saved_models/resnet18-cifar10-.../", "tf_flowers", config, unfreeze="conv5")
    features = train.feature_extractor(vgg, "fc7").predict(images)   # VGG's fc2, 4096-d
    indices, distances = train.nearest_neighbours(features, features[0], k=5)

Library code here changes no process-wide state: mixed precision is applied per layer
(`prepare_model`), seeds only seed the data pipeline; the `kcnn` command line sets the
global seed.
"""

from kcnn.training.compile import (
    WarmupSchedule,
    compile_model,
    make_optimizer,
    make_schedule,
    steps_per_execution,
)
from kcnn.training.config import (
    DeviceSettings,
    TrainConfig,
    prepare_model,
    resolve_device,
)
from kcnn.training.loop import (
    TrainResult,
    check_compatible,
    evaluate,
    fit,
    load,
    load_data,
    load_data_for,
    predict,
    save_run,
    with_targets,
)
from kcnn.training.run import NonFiniteLossError, RunFolder, TerminateOnNonFinite
from kcnn.training.transfer import (
    feature_extractor,
    fine_tune,
    nearest_neighbours,
    replace_head,
    set_trainable,
    stage_prefix,
)

__all__ = [
    "DeviceSettings",
    "NonFiniteLossError",
    "RunFolder",
    "TerminateOnNonFinite",
    "TrainConfig",
    "TrainResult",
    "WarmupSchedule",
    "check_compatible",
    "compile_model",
    "evaluate",
    "feature_extractor",
    "fine_tune",
    "fit",
    "load",
    "load_data",
    "load_data_for",
    "make_optimizer",
    "make_schedule",
    "nearest_neighbours",
    "predict",
    "prepare_model",
    "replace_head",
    "save_run",
    "resolve_device",
    "set_trainable",
    "stage_prefix",
    "steps_per_execution",
    "with_targets",
]
