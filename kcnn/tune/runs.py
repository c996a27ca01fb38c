"""The `kcnn.train` run folders a search trains besides its trials (the bar, the
finish's retrained trials and references): trained or resumed (`fit`), read back when
finished (`completed`), summed up as a `FinishRecord` (`record`)."""

from __future__ import annotations

import pathlib
from typing import Any

from kcnn._files import CorruptFileError, read_json, write_json
from kcnn.tune.selection import FinishRecord

__all__ = ["completed", "fit", "record"]


def fit(model, source, recipe, run, data_options, model_kwargs=None, model_facts=None, search=None) -> dict[str, Any]:
    """Trains (or resumes) the run of `model` on `source` with `recipe`, then adds its
    MACs, `model_facts` and `search` to its metadata; returns the metadata."""
    from kcnn import data as kdata
    from kcnn import shapes, train

    if isinstance(source, kdata.Dataset):
        # The data order and augmentation of a run in a new process, whatever trained before.
        source, data_options = source.restarted(), None
    result = train.fit(model, source, recipe, output=run, model_kwargs=model_kwargs, data_options=data_options, verbose=0)
    metadata = result.metadata
    metadata["model"]["macs"] = int(shapes.count_macs(result.model))
    metadata["model"].update(model_facts or {})
    if search is not None:
        metadata["search"] = search
    write_json(pathlib.Path(run) / "metadata.json", metadata)
    return metadata


def completed(run) -> dict[str, Any] | None:
    """The metadata of a finished run in `run`, else None (no run, or unfinished: it resumes)."""
    try:
        metadata = read_json(pathlib.Path(run) / "metadata.json")
    except CorruptFileError:
        return None
    return metadata if metadata and metadata.get("status") == "completed" else None


def record(name, kind, run, metadata, search_score=None) -> FinishRecord:
    """The `FinishRecord` of a finished run, from its metadata."""
    metrics = metadata.get("metrics") or {}
    validation = metrics.get("validation") or {}
    test = metrics.get("test") or {}
    parameters = metadata["model"].get("parameters") or {}
    return FinishRecord(
        name=name,
        kind=kind,
        validation=validation.get("accuracy"),
        validation_examples=validation.get("examples") or metadata["dataset"].get("num_validation"),
        test=test.get("accuracy"),
        test_examples=test.get("examples"),
        params=parameters.get("total"),
        macs=metadata["model"].get("macs"),
        search_score=search_score,
        path=pathlib.Path(run),
        reason=None,
    )
