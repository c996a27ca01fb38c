"""A run's metadata.json as a run starts: the model, the data, the preprocessing, the
config and the versions it was made with (the run folder is `kcnn.train.runs`'s; the
metrics and timing are added when the run finishes, `kcnn.train.driver`)."""

from __future__ import annotations

import platform
import time
from typing import Any

import keras
import numpy as np

from kcnn._files import CorruptFileError
from kcnn.train.compile import output_names
from kcnn.train.runs import METADATA_FORMAT
from kcnn.train.segmentation import task_metadata


def start_metadata(run, model, data, config, builder_arguments, *, kind, loaded_here=True) -> dict[str, Any]:
    """The metadata.json of a run starting (or resuming: its creation time is kept).

    Args:
        run: the `RunFolder`.
        model: the model being trained.
        data: the `kcnn.data.Dataset` it trains on.
        config: the `TrainConfig`.
        builder_arguments: the registry builder's arguments, when known.
        kind: "fit", "fine_tune" or "search".
        loaded_here: whether the run loaded the data itself (with `config.augment`).
    """
    from kcnn import registry

    try:
        previous = run.read_metadata()
    except CorruptFileError:  # Reported by open_run; the creation time is lost.
        previous = None
    spec = registry.MODELS.get(model.name)
    metadata = {
        "format": METADATA_FORMAT,
        "kind": kind,
        "status": "running",
        "created": (previous or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "model": {
            "name": model.name,
            "registered": spec is not None,
            "family": spec.family if spec else None,
            "builder_arguments": builder_arguments,
            "input_shape": list(model.input_shape[1:]),
            "classes": int(model.outputs[0].shape[-1]),
            "training_outputs": output_names(model),
            "parameters": parameter_counts(model),
        },
        "dataset": {
            "name": data.name,
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "num_train": data.num_train,
            "num_validation": data.num_validation,
            "num_test": data.num_test,
            "batch_size": data.batch_size,
            "streaming": data.streaming,
            # `config.augment` only applies when the run loads the data itself.
            "augment": config.augment if loaded_here else "as loaded by the caller",
            # Unreadable files the loader skipped (named, with the reason).
            "skipped_files": list(data.skipped_files),
        },
        "class_names": list(data.class_names),
        "preprocessing": dict(data.preprocessing),
        # What the model expects to see: `kcnn.train.predict` warns on images far from it.
        "input_statistics": data.input_statistics,
        "config": config.to_dict(),
        "versions": versions(),
    }
    metadata.update(task_metadata(data))  # A segmentation run's task, ignore label and palette.
    return metadata


def parameter_counts(model: keras.Model) -> dict[str, int]:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def versions() -> dict[str, str]:
    """The versions a run was made with."""
    import tensorflow as tf

    import kcnn

    return {
        "kcnn": kcnn.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
