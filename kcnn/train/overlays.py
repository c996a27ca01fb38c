"""A segmentation model's predictions on image files, written as pictures: the mask in
the run's class colours and the image tinted by it (`kcnn predict` on a segmentation
run)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from kcnn import data as kdata
from kcnn.data.masks import default_palette, mask_overlay, save_image, save_mask
from kcnn.train.inference import predict
from kcnn.train.runs import run_metadata

__all__ = ["save_segmentations"]


def save_segmentations(
    model_or_path, paths: Sequence[str], output_dir, *, mixed_precision: str = "auto", alpha: float = 0.5
) -> list[dict[str, Any]]:
    """Segments image files and writes two pictures of each into `output_dir`:
    `<name>.mask.png`, the predicted mask as a palette PNG (in the run's class colours,
    read back by `kcnn.data.masks.load_mask` as class indices), and `<name>.overlay.png`,
    the image tinted by it.

    Args:
        model_or_path: a segmentation run folder or `.keras` file.
        paths: image files.
        output_dir: where the pictures go (created).
        mixed_precision: as `kcnn.train.predict`'s.
        alpha: the colours' weight in the overlay.

    Returns:
        Per image, `{"image", "mask", "overlay", "shares"}`: the file names and each
        class's share of the image's pixels (`{class name: fraction}`).
    """
    paths = [os.fspath(p) for p in paths]
    probabilities = predict(model_or_path, paths, mixed_precision=mixed_precision)
    if not paths or not isinstance(probabilities[0], np.ndarray):
        raise ValueError(f"Expected a segmentation model (per-pixel outputs). Received: {model_or_path!r}, a classifier")
    metadata = run_metadata(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else {}
    classes = probabilities[0].shape[-1]
    names = metadata.get("class_names") or [str(i) for i in range(classes)]
    palette = metadata.get("segmentation", {}).get("palette") or default_palette(classes)
    folder = pathlib.Path(output_dir)
    taken: set[str] = set()
    written = []
    for path, pixels in zip(paths, probabilities):
        stem = pathlib.Path(path).stem
        base, number = stem, 2
        while base in taken:  # two images of one name (from two folders)
            base, number = f"{stem}-{number}", number + 1
        taken.add(base)
        mask = np.argmax(pixels, axis=-1).astype(np.uint8)
        mask_path, overlay_path = folder / f"{base}.mask.png", folder / f"{base}.overlay.png"
        save_mask(mask_path, mask, palette)
        save_image(overlay_path, mask_overlay(kdata.load_image(path), mask, palette, alpha))
        shares = np.bincount(mask.reshape(-1), minlength=classes) / mask.size
        written.append({"image": path, "mask": os.fspath(mask_path), "overlay": os.fspath(overlay_path), "shares": dict(zip(names, shares.tolist()))})
    return written
