"""Measures kcnn.export on a LeNet-5 trained on the bundled digits: each format's
largest difference from kcnn.train.predict's probabilities on the raw 8x8 test digits
(resized by the exported graph to 32x32), and int8's test accuracy change.

    .venv/bin/python docs/measure_export.py           # trains (about 15 s) first
    .venv/bin/python docs/measure_export.py RUN       # a run folder of `kcnn train`
"""

import pathlib
import sys
import tempfile
import warnings

import keras
import numpy as np

import kcnn
from kcnn import train
from kcnn.export import export
from kcnn.serving import load_exported

SEED = 1337
EXPORTS = [("saved_model", "saved", None), ("onnx", "model.onnx", None), ("litert", "model.tflite", None),
           ("litert", "float16.tflite", "float16"), ("litert", "int8.tflite", "int8")]  # fmt: skip


def main(argv):
    folder = pathlib.Path(tempfile.mkdtemp(prefix="kcnn-export-"))
    if argv:
        run = pathlib.Path(argv[0])
    else:
        keras.utils.set_random_seed(SEED)
        run = folder / "lenet5-digits"
        train.fit("lenet5", "digits", train.TrainConfig(seed=SEED), output=run, verbose=0)
    _, metadata = train.load(run)
    digits = kcnn.data.load("digits", normalize=False, image_size=8, seed=metadata["config"]["seed"])
    images, labels = kcnn.data.as_numpy(digits.test)
    images = list(images.astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 8x8 is the digits' own size: nothing unusual
        ranked = train.predict(run, images, top_k=len(metadata["class_names"]))
    expected = np.array([[dict(row)[name] for name in metadata["class_names"]] for row in ranked])
    print(f"run: {run}\nKeras test accuracy on the raw 8x8 digits: {np.mean(expected.argmax(1) == labels):.2%} ({len(labels)} images)")
    print("| format | quantize | size | max abs difference | test accuracy |\n|---|---|---:|---:|---:|")
    for format, name, quantize in EXPORTS:
        result = export(run, folder / name, format, quantize=quantize)
        got = load_exported(result.path)(np.stack(images))
        size = sum(p.stat().st_size for p in result.path.rglob("*")) if result.path.is_dir() else result.path.stat().st_size
        print(f"| {format} | {quantize or '-'} | {size / 1024:.0f} KiB | {np.abs(got - expected).max():.2e} | {np.mean(got.argmax(1) == labels):.2%} |")
        if result.accuracy:
            a = result.accuracy
            print(f"|   | int8 on the 32x32 test split | | | {a['keras_accuracy']:.2%} -> {a['exported_accuracy']:.2%} ({100 * a['change']:+.2f} points) |")


if __name__ == "__main__":
    main(sys.argv[1:])
