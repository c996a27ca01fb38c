"""The TFDS source of `load()`: a prepared (or downloaded) TFDS dataset as streamed,
cached splits, and the errors that say how to get one that is not there."""

from __future__ import annotations

import difflib
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from kcnn.data import pipeline
from kcnn.data.preprocessing import _adapt_images, _finish_stats
from kcnn.data.sources import DEFAULT_VARIABLE_IMAGE_SIZE
from kcnn.data.splits import AUTOTUNE, _TFDSSplit
from kcnn.data.statistics import TFDS_SAMPLE, _input_statistics, _memory_sample

logger = logging.getLogger("kcnn")

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


def _local_builders(tfds) -> list[str]:
    """The registered TFDS builder names (without the community ones, a network list)."""
    return tfds.list_builders(with_community_datasets=False)


def _check_known(tfds, name: str, data_dir: str | None) -> None:
    """Refuses a name that is neither a registered TFDS builder nor a dataset prepared in
    a local data folder, before `tfds.builder` looks it up on the network (Google
    Cloud Storage, with authentication warnings and time-outs where there is none).
    Namespaced names ("huggingface:mnist") are TFDS's to resolve."""
    try:
        parsed, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    except ValueError as error:
        raise _unknown_name_error(name, _local_builders(tfds), reason=str(error).splitlines()[0]) from None
    if parsed.namespace:
        return
    builders = _local_builders(tfds)
    folders = [data_dir] if data_dir else [os.fspath(d) for d in tfds.core.utils.file_utils.list_data_dirs()]
    if parsed.name not in builders and not any(os.path.isdir(os.path.join(folder, parsed.name)) for folder in folders):
        raise _unknown_name_error(name, builders)


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


def _open_builder(name, data_dir, download):
    """`(builder, folder, received)`: the TFDS builder of `name` (downloaded and prepared
    first with `download`, when it is not yet), its data folder, and the "Received:"
    part of the errors about it."""
    import tensorflow_datasets as tfds  # Deferred: slow to import, only this source needs it.

    data_dir = None if data_dir is None else os.fspath(data_dir)
    _check_known(tfds, name, data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise _unknown_name_error(name, _local_builders(tfds)) from None
    except ValueError as error:  # Not even a valid TFDS name (e.g. a missing path).
        raise _unknown_name_error(name, _local_builders(tfds), reason=str(error).splitlines()[0]) from None
    folder = os.fspath(builder.data_dir_root)
    received = f"Received: source={name!r}, download={download!r}, data_dir={data_dir!r}"
    # `download_and_prepare` reuses an existing variant folder and only then needs no network.
    if download and not builder.data_path.exists():
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
    return builder, folder, received


def _load_tfds(
    name, *, data_dir, download, cache, image_size, channels, validation_split, test_split, seed
) -> dict:
    import tensorflow_datasets as tfds  # Deferred: slow to import, only this source needs it.

    # TFDS slices are fixed; the seed drives the training files' order (`_file_seed`).
    builder, folder, received = _open_builder(name, data_dir, download)
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

    def decode_and_adapt(encoded, label):
        return adapt(info.features[image_key].decode_example(encoded), label)

    splits: dict[str, Any] = {"train": None, "validation": None, "test": None}
    for split, raw in zip(wanted, loaded, strict=True):
        uncached = ds = raw.map(adapt, num_parallel_calls=AUTOTUNE)
        known = int(uncached.cardinality())
        decoded_bytes = max(known, 0) * size[0] * size[1] * channels
        cached = bool(cache) and not (cache is True and decoded_bytes > pipeline.IN_MEMORY_LIMIT)
        if cache is True and decoded_bytes > pipeline.IN_MEMORY_LIMIT:
            # Not in RAM: a split that does not fit is read and decoded every epoch
            # (cache=PATH keeps it decoded on disk).
            logger.info(
                "%s[%s]: %.2f GB decoded is above kcnn.data.IN_MEMORY_LIMIT (%.2f GB): not cached in memory; "
                "cache=PATH caches it in a file",
                name, split, decoded_bytes / 1e9, pipeline.IN_MEMORY_LIMIT / 1e9,
            )  # fmt: skip
        elif cache:
            # Decoded and resized once; later epochs read uint8 from the cache.
            ds = ds.cache() if cache is True else ds.cache(os.fspath(cache) + f".{split}")
        count = int(ds.cardinality())
        if count < 0:
            count = int(uncached.reduce(np.int64(0), lambda n, _: n + 1))
        encoded, shuffled = None, split == "train"
        if not cached and isinstance(info.features[image_key], tfds.features.Image):
            # Read afresh each epoch, the images still encoded, decoded once shuffled
            # (only those of its rows by a worker of a cluster, `_TFDSSplit`); the
            # training split's files in another order each epoch, the same orders for
            # a seed (a cache would hold the order of the pass that filled it). A new
            # reader for each pipeline: the files' order is drawn from its reader's own
            # generator, which two pipelines (another batch size, a worker's share)
            # must not share.
            def encoded(spec=wanted[split], shuffled=shuffled):
                read = tfds.ReadConfig(shuffle_seed=_file_seed(seed), shuffle_reshuffle_each_iteration=True)
                return builder.as_dataset(
                    split=spec,
                    as_supervised=True,
                    shuffle_files=shuffled,
                    read_config=read if shuffled else None,
                    decoders={image_key: tfds.decode.SkipDecoding()},
                )

        splits[split] = _TFDSSplit(ds, count, uncached, encoded=encoded, decode=decode_and_adapt, files_shuffled=shuffled)

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

    return {
        **splits,
        "class_names": list(class_names),
        "image_size": size,
        "channels": channels,
        "name": name,
        "stats": lambda: _split_stats(splits["train"], channels),
        "statistics": _input_statistics(_memory_sample(sample), source_sizes),
    }


def _split_stats(split: _TFDSSplit, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of a TFDS split's images: one pass over the (cached)
    split, which fills the cache as a side effect, so the first epoch is no slower."""
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for x, _ in split.ds.batch(512).as_numpy_iterator():
        flat = x.reshape(-1, channels).astype(np.float64)
        total += flat.sum(0)
        total_sq += np.square(flat).sum(0)
        count += len(flat)
    return _finish_stats(total, total_sq, count)


def _file_seed(seed: int) -> int:
    """The seed of the training files' order: its own stream, apart from the element
    shuffle's and the augmentation's (see `augment._Policy`)."""
    return int(np.random.SeedSequence([seed % 2**32, 0xF11E]).generate_state(1)[0])


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
