"""The sources `load()` reads: the bundled digits, NumPy arrays and `.npz` files,
image folders, and TFDS datasets."""

from __future__ import annotations

import collections
import difflib
import os
import socket
import threading
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from kcnn.data.pipeline import AUTOTUNE, _MemorySplit, _TFDSSplit
from kcnn.data.preprocessing import (
    _DECODE_ERRORS,
    _GRAY_MODES,
    IMAGE_EXTENSIONS,
    _adapt_array,
    _adapt_images,
    _channel_stats,
    _decode_file,
    _finish_stats,
)
from kcnn.data.statistics import TFDS_SAMPLE, _input_statistics, _memory_sample

DIGITS_IMAGE_SIZE = (32, 32)


#: Used for TFDS datasets whose images have no fixed size (e.g. tf_flowers).
DEFAULT_VARIABLE_IMAGE_SIZE = (224, 224)


# A few well-known TFDS names to suggest in the unknown-name error.
_POPULAR_TFDS = (
    "mnist",
    "fashion_mnist",
    "kmnist",
    "emnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "tf_flowers",
)


_VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev")


# The EXIF tag of the orientation a decoder applies (`PIL.ImageOps.exif_transpose`).
_EXIF_ORIENTATION = 0x0112


def _stratified_split(y: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Splits indices per class: part k gets round(n_class * fractions[k]).

    Parts are taken in order from one seeded permutation per class and the
    remainder is returned last, so earlier parts do not depend on later
    fractions. Indices within each part are sorted (source order).
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        start = 0
        for k, fraction in enumerate(fractions):
            count = int(round(len(idx) * fraction))
            parts[k].append(idx[start : start + count])
            start += count
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _memory_splits(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    *,
    validation_split: float,
    test_split: float,
    seed: int,
) -> dict[str, _MemorySplit | None]:
    """Carves test (if none given) then validation, stratified by class."""
    if x_test is None:
        test_idx, val_idx, train_idx = _stratified_split(y, (test_split, validation_split), seed)
        test = _MemorySplit(x[test_idx], y[test_idx]) if len(test_idx) else None
    else:
        val_idx, train_idx = _stratified_split(y, (validation_split,), seed)
        test = _MemorySplit(x_test, y_test)
    if len(train_idx) == 0:
        raise ValueError(f"Not enough examples to leave a training split. Received: {len(x)} examples")
    return {
        "train": _MemorySplit(x[train_idx], y[train_idx]),
        # A fraction too small to take one example per class gives no split.
        "validation": _MemorySplit(x[val_idx], y[val_idx]) if len(val_idx) else None,
        "test": test,
    }


def _finish_memory(splits: dict, *, class_names, image_size, channels, name, source_sizes) -> dict:
    train = splits["train"]
    return {
        **splits,
        "class_names": [str(c) for c in class_names],
        "image_size": image_size,
        "channels": channels,
        "name": name,
        "stats": lambda: _channel_stats(train.x),
        "statistics": _input_statistics(_memory_sample(train.x), source_sizes),
    }


def _load_digits(*, image_size, channels, validation_split, test_split, seed) -> dict:
    from sklearn.datasets import (
        load_digits,  # Deferred: only this source needs scikit-learn.
    )

    digits = load_digits()
    size = image_size or DIGITS_IMAGE_SIZE
    channels = channels or 1
    # 0..16 intensities -> the 0..255 pixel scale every source shares, so new
    # digit images (e.g. PNGs) can be preprocessed like any other image.
    x = _adapt_array((digits.images * (255.0 / 16.0)).astype(np.float32)[..., None], size, channels)
    y = digits.target.astype(np.int32)
    splits = _memory_splits(
        x, y, None, None, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(
        splits, class_names=range(10), image_size=size, channels=channels, name="digits", source_sizes=[(8, 8)]
    )


def _prepare_x(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise ValueError(
            f"Expected `{what}` as a non-empty NHW or NHWC array with 1, 3 or 4 channels. "
            f"Received: {what} with shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"Expected `{what}` to be numeric. Received: dtype={x.dtype}")
    return x


def _prepare_y(y: Any, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"Expected `{what}` as {n} integer class indices, shape ({n},). "
            f"Received: {what} with shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) and not (
        np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)
    ):
        raise ValueError(f"Expected `{what}` to hold integer class indices. Received: dtype={y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError(f"Expected `{what}` to hold class indices >= 0. Received: minimum {y.min()}")
    return y.astype(np.int32)


def _load_arrays(source: Any, *, name, image_size, channels, validation_split, test_split, seed) -> dict:
    class_names = None
    if isinstance(source, Mapping):
        keys = set(source)
        if {"x", "y"} <= keys:
            x, y, x_test, y_test = source["x"], source["y"], None, None
        elif {"x_train", "y_train"} <= keys:
            x, y = source["x_train"], source["y_train"]
            x_test, y_test = source.get("x_test"), source.get("y_test")
            if (x_test is None) != (y_test is None):
                raise ValueError(
                    f"Expected both `x_test` and `y_test` or neither. Received keys: {sorted(keys)}"
                )
        else:
            raise ValueError(
                "Expected arrays under keys 'x'/'y' or 'x_train'/'y_train' (+ optional 'x_test'/'y_test'). "
                f"Received keys: {sorted(keys)}"
            )
        if "class_names" in keys:
            class_names = [str(c) for c in np.asarray(source["class_names"]).tolist()]
    elif len(source) == 2 and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in source):
        (x, y), (x_test, y_test) = source  # The keras.datasets layout.
    elif len(source) == 2:
        (x, y), x_test, y_test = source, None, None
    else:
        raise ValueError(
            f"Expected (x, y) or ((x, y), (x_test, y_test)). Received: a sequence of length {len(source)}"
        )

    x = _prepare_x(x, "x")
    y = _prepare_y(y, len(x), "y")
    if x_test is not None:
        x_test = _prepare_x(x_test, "x_test")
        y_test = _prepare_y(y_test, len(x_test), "y_test")
        if x_test.shape[1:-1] != x.shape[1:-1] and image_size is None:
            raise ValueError(
                f"Expected `x_test` images of the training size {x.shape[1:3]} (or pass image_size). "
                f"Received: x_test with shape {x_test.shape}"
            )
    num_classes = int(max(y.max(), -1 if y_test is None else y_test.max())) + 1
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif len(class_names) < num_classes:
        raise ValueError(
            f"Expected at least {num_classes} class names for labels up to {num_classes - 1}. "
            f"Received: {len(class_names)} class_names"
        )

    native_size = (int(x.shape[1]), int(x.shape[2]))
    size = image_size or native_size
    native = 1 if x.shape[-1] == 1 else 3
    channels = channels or native
    x = _adapt_array(x, size, channels)
    if x_test is not None:
        # The test images must share the training scale decision ([0, 1]
        # floats vs 0..255), so they are adapted with the same rule.
        x_test = _adapt_array(x_test, size, channels)
    splits = _memory_splits(
        x, y, x_test, y_test, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(
        splits, class_names=class_names, image_size=size, channels=channels, name=name, source_sizes=[native_size]
    )


def _list_class_folders(root: str) -> tuple[list[str], list[list[str]]]:
    class_names = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise ValueError(
            "Expected a directory with one sub-directory of images per class. "
            f"Received: source={root!r}, which has no sub-directories"
        )
    files = []
    for name in class_names:
        folder = os.path.join(root, name)
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(
                os.path.join(dirpath, f)
                for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            )
        if not found:
            raise ValueError(
                f"Expected every class folder to contain images ({', '.join(IMAGE_EXTENSIONS)}). "
                f"Received: class folder {folder!r} with no images"
            )
        files.append(found)
    return class_names, files


def _median_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    if not sizes:
        return None
    heights, widths = np.median(np.asarray(sizes, np.float64), axis=0)
    return int(round(heights)), int(round(widths))


def _warn_mixed_sizes(root: str, sizes: Sequence[tuple[int, int]], size: tuple[int, int]) -> None:
    """Warns when a folder's images are not all of one size: every image is resized
    to `size`, which stretches those of another aspect ratio and can hide a stray
    image (one 640x480 photo among 28x28 digits)."""
    counts = collections.Counter(sizes)
    if len(counts) < 2:
        return
    common = counts.most_common(5)
    shown = ", ".join(f"{h}x{w} ({n})" for (h, w), n in common)
    if len(counts) > len(common):
        shown += f" and {len(counts) - len(common)} other sizes ({sum(counts.values()) - sum(n for _, n in common)})"
    warnings.warn(
        f"The images under {root!r} differ in size: {len(counts)} sizes (height x width (images)): {shown}. "
        f"All are resized to {size[0]}x{size[1]}; pass image_size (--image-size) to choose the size.",
        UserWarning,
        stacklevel=5,  # The caller of `kcnn.data.load`.
    )


def _load_folder(root: str, *, image_size, channels, validation_split, test_split, seed) -> dict:
    from PIL import Image

    class_names, files = _list_class_folders(root)
    # Headers first (cheap, no pixel decoding): the default size and channel
    # count must be known before decoding so every image is adapted once.
    bad: list[str] = []
    readable: list[list[str]] = []
    any_color = False
    sizes: list[tuple[int, int]] = []
    for paths in files:
        ok = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    mode, (width, height) = image.mode, image.size
                    # Decoding applies the EXIF orientation; 5..8 turn the image sideways.
                    if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                        width, height = height, width
            except _DECODE_ERRORS:
                bad.append(path)
                continue
            any_color = any_color or mode not in _GRAY_MODES
            sizes.append((height, width))
            ok.append(path)
        readable.append(ok)
    size = image_size or _median_size(sizes) or DEFAULT_VARIABLE_IMAGE_SIZE
    channels = channels or (3 if any_color else 1)
    _warn_mixed_sizes(root, sizes, size)

    images, labels = [], []
    for label, (name, paths) in enumerate(zip(class_names, readable, strict=True)):
        count = 0
        for path in paths:
            try:
                image = _decode_file(path)
            except _DECODE_ERRORS:  # Truncated data behind a valid header.
                bad.append(path)
                continue
            images.append(_adapt_images(image[None], size, channels).numpy()[0])
            labels.append(label)
            count += 1
        if count == 0:
            raise ValueError(
                f"Expected every class folder to contain readable images. "
                f"Received: class folder {os.path.join(root, name)!r} whose images all failed to decode"
            )
    if bad:
        shown = ", ".join(repr(p) for p in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(
            f"Skipped {len(bad)} unreadable image file(s) under {root!r}: {shown}",
            UserWarning,
            stacklevel=4,  # The caller of `kcnn.data.load`.
        )
    x = np.stack(images)
    y = np.asarray(labels, np.int32)
    splits = _memory_splits(
        x, y, None, None, validation_split=validation_split, test_split=test_split, seed=seed
    )
    return _finish_memory(
        splits, class_names=class_names, image_size=size, channels=channels, name=root, source_sizes=sizes
    )


# --------------------------------------------------------------------------
# TFDS.


def _unknown_name_error(name: str, builders: Sequence[str], reason: str = "") -> ValueError:
    known = ["digits", *builders]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    popular = ", ".join(b for b in _POPULAR_TFDS if b in builders)
    detail = f" ({reason})" if reason else ""
    if os.sep in name or name.startswith("."):
        detail += " (no such directory or file either)"
    return ValueError(
        f"Unknown dataset {name!r}.{hint} Expected 'digits', one of the {len(builders)} TFDS names "
        f"(e.g. {popular}; see tfds.list_builders()), an existing directory of class sub-folders, "
        f"an .npz path or (x, y) arrays. Received: source={name!r}{detail}"
    )


def _slices(num: int | None, fractions: Sequence[float]) -> list[str | None]:
    """Split specs carving `fractions` off the end of "train", in order.

    Returns `[train_spec, *specs]`; a spec is None for an empty slice.
    Absolute indices when the size is known (exact), else whole percents.
    """
    if num is not None:
        counts = [int(round(num * f)) for f in fractions]
        bounds = [num - sum(counts)]
    else:
        counts = [int(round(100 * f)) for f in fractions]
        bounds = [100 - sum(counts)]
    for count in counts:
        bounds.append(bounds[-1] + count)
    unit = "" if num is not None else "%"
    specs: list[str | None] = [f"train[:{bounds[0]}{unit}]"]
    for k, fraction in enumerate(fractions):
        empty = fraction <= 0 or bounds[k] == bounds[k + 1]
        specs.append(None if empty else f"train[{bounds[k]}{unit}:{bounds[k + 1]}{unit}]")
    return specs


def _load_tfds(
    name, *, data_dir, download, cache, image_size, channels, validation_split, test_split, seed
) -> dict:
    import tensorflow_datasets as tfds  # Deferred: slow to import, only this source needs it.

    del seed  # TFDS slices are fixed; the seed only drives shuffling/augmentation.
    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise _unknown_name_error(name, tfds.list_builders()) from None
    except ValueError as error:  # Not even a valid TFDS name (e.g. a missing path).
        raise _unknown_name_error(name, tfds.list_builders(), reason=str(error).splitlines()[0]) from None
    folder = os.fspath(builder.data_dir_root)
    received = f"Received: source={name!r}, download={download!r}, data_dir={data_dir!r}"
    if download and not builder.is_prepared():
        # Offline, TFDS retries every file for minutes before it fails; one short
        # connection attempt to the download host says the same at once.
        unreachable = _unreachable(_download_endpoints(builder))
        if unreachable:
            raise ValueError(
                f"Cannot download the TFDS dataset {name!r}: its download host cannot be reached ({unreachable}), "
                f"and it is not prepared in {folder!r}. {_tfds_ways_out(name, folder)} {received}"
            )
        try:
            builder.download_and_prepare()
        except OSError as error:  # requests' ConnectionError and HTTPError are OSErrors too.
            raise ValueError(
                f"Could not download and prepare the TFDS dataset {name!r} into {folder!r}: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}. "
                f"{_tfds_ways_out(name, folder)} {received}"
            ) from error
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) < 2 or not all(isinstance(k, str) for k in keys[:2]):
        raise ValueError(
            "Expected a TFDS dataset with (image, label) supervised keys. "
            f"Received: {name!r} with supervised_keys={keys!r}"
        )
    image_key, label_key = keys[0], keys[1]
    label_feature = info.features[label_key]
    class_names = getattr(label_feature, "names", None)
    if not class_names:
        raise ValueError(
            "Expected a TFDS dataset with a ClassLabel label. "
            f"Received: {name!r} with label feature {label_feature!r}"
        )
    image_shape = tuple(info.features[image_key].shape)
    if len(image_shape) != 3:
        raise ValueError(
            f"Expected a TFDS dataset of HWC images. Received: {name!r} with image shape {image_shape}"
        )

    # Unprepared or mocked datasets know no splits; train/test is the norm.
    available = set(info.splits.keys()) or {"train", "test"}
    if "train" not in available:
        raise ValueError(
            "Expected a TFDS dataset with a 'train' split. "
            f"Received: {name!r} with splits {sorted(available)}"
        )
    num_train = info.splits["train"].num_examples if "train" in info.splits else None
    val_name = next((s for s in _VALIDATION_SPLIT_NAMES if s in available), None)
    has_test = "test" in available
    carve_val = 0.0 if val_name else validation_split
    carve_test = 0.0 if has_test else test_split
    train_spec, val_spec, test_spec = _slices(num_train, (carve_val, carve_test))
    val_spec = val_name or val_spec
    test_spec = "test" if has_test else test_spec

    wanted = {k: v for k, v in (("train", train_spec), ("validation", val_spec), ("test", test_spec)) if v}
    try:
        loaded = builder.as_dataset(split=list(wanted.values()), as_supervised=True, shuffle_files=False)
    except AssertionError as error:  # TFDS's way of saying "not prepared".
        raise ValueError(
            f"The TFDS dataset {name!r} is not prepared in {folder!r} (data_dir; TFDS's default is "
            f"~/tensorflow_datasets) and downloading is off. {_tfds_ways_out(name, folder)} {received}"
        ) from error

    size = image_size or (image_shape[:2] if None not in image_shape[:2] else DEFAULT_VARIABLE_IMAGE_SIZE)
    size = (int(size[0]), int(size[1]))
    native = image_shape[2]
    channels = channels or (1 if native == 1 else 3)

    def adapt(image, label):
        image = _adapt_images(image[None], size, channels)[0]
        image.set_shape((*size, channels))
        return image, tf.cast(label, tf.int32)

    splits: dict[str, Any] = {"train": None, "validation": None, "test": None}
    for split, raw in zip(wanted, loaded, strict=True):
        uncached = ds = raw.map(adapt, num_parallel_calls=AUTOTUNE)
        if cache:
            # Decoded and resized once; later epochs read uint8 from the cache.
            ds = ds.cache() if cache is True else ds.cache(os.fspath(cache) + f".{split}")
        count = int(ds.cardinality())
        if count < 0:
            count = int(uncached.reduce(np.int64(0), lambda n, _: n + 1))
        splits[split] = _TFDSSplit(ds, count, uncached)

    # The input statistics: a bounded sample of the first training images, read
    # apart from the cache (a partly read cache would be thrown away).
    def sample_element(image, label):
        del label
        return adapt(image, 0)[0], tf.shape(image)[:2]

    first = loaded[0].take(TFDS_SAMPLE).map(sample_element, num_parallel_calls=AUTOTUNE).batch(TFDS_SAMPLE)
    batch = next(first.as_numpy_iterator(), None)
    if batch is None:
        raise ValueError(f"Not enough examples to leave a training split. Received: {name!r} with split {train_spec!r} empty")
    sample, shapes = batch
    source_sizes = [image_shape[:2]] if None not in image_shape[:2] else [tuple(s) for s in shapes]

    def stats():
        # One pass over the (cached) training split; fills the cache as a
        # side effect, so the first epoch is no slower.
        total = np.zeros(channels)
        total_sq = np.zeros(channels)
        count = 0
        for x, _ in splits["train"].ds.batch(512).as_numpy_iterator():
            flat = x.reshape(-1, channels).astype(np.float64)
            total += flat.sum(0)
            total_sq += np.square(flat).sum(0)
            count += len(flat)
        return _finish_stats(total, total_sq, count)

    return {
        **splits,
        "class_names": list(class_names),
        "image_size": size,
        "channels": channels,
        "name": name,
        "stats": stats,
        "statistics": _input_statistics(_memory_sample(sample), source_sizes),
    }


def _tfds_ways_out(name: str, folder: str) -> str:
    """The ways to get a TFDS dataset that is not prepared, as the error says them."""
    return (
        "Ways out: on the command line, add `--download --data-dir DIR` (needs network access); in Python, pass "
        "`data_options={'download': True, 'data_dir': DIR}` to kcnn.train.fit, kcnn.train.fine_tune or "
        f"kcnn.tune.search, or call kcnn.data.load({name!r}, download=True, data_dir=DIR); or prepare it on a "
        f"machine with network access (kcnn.data.load({name!r}, download=True)) and copy its folder "
        f"~/tensorflow_datasets/{name} into {os.path.join(folder, name)!r} (or into DIR and pass data_dir=DIR)."
    )


# Seconds a download host has to accept a connection before it counts as unreachable.
_REACHABILITY_TIMEOUT = 5.0
# TFDS's own host, checked for datasets that list no download URLs.
_FALLBACK_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def _download_endpoints(builder, limit: int = 3) -> list[tuple[str, int]]:
    """The (host, port) pairs a download of `builder` connects to first: the hosts
    of its registered download URLs, or the proxy that `urllib` (and so `requests`,
    which TFDS downloads with) would use for them."""
    try:
        urls = list(builder.url_infos or ())
    except Exception:  # A dataset without a checksums file: its URLs are in its code.
        urls = []
    proxies = urllib.request.getproxies()
    endpoints: list[tuple[str, int]] = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        proxy = proxies.get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname):
            parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        endpoint = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        if parts.hostname and endpoint not in endpoints:
            endpoints.append(endpoint)
    return endpoints[:limit] or [_FALLBACK_DOWNLOAD_HOST]


def _unreachable(endpoints: Sequence[tuple[str, int]], timeout: float = _REACHABILITY_TIMEOUT) -> str | None:
    """None when one of `endpoints` accepts a TCP connection within `timeout`
    seconds, else why none did ("host:port: reason; ...")."""
    reasons = []
    for host, port in endpoints:
        outcome: dict[str, Any] = {}

        def probe(host=host, port=port, outcome=outcome):
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    outcome["ok"] = True
            except OSError as error:
                outcome["error"] = error

        # In a thread: the name lookup inside create_connection ignores `timeout`
        # (an unreachable DNS server holds it for the resolver's own retries).
        thread = threading.Thread(target=probe, name="kcnn-download-check", daemon=True)
        thread.start()
        thread.join(timeout)
        if outcome.get("ok"):
            return None
        reasons.append(f"{host}:{port}: {outcome.get('error') or f'no answer within {timeout:g} s'}")
    return "; ".join(reasons)
