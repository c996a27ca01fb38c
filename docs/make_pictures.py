"""Makes the README's pictures from a LeNet-5 trained on the bundled digits:

    .venv/bin/python docs/make_pictures.py            # trains (about 15 s), writes docs/*.png
    .venv/bin/python docs/make_pictures.py RUN        # uses a run folder of `kcnn train`

docs/gradcam.png          a test digit, its Grad-CAM heat map and the predicted classes
docs/activation_maps.png  conv1's six filters, and the activation maps of conv1 and conv3
"""

import pathlib
import sys
import tempfile

import keras
import numpy as np
from matplotlib.figure import Figure

import kcnn
from kcnn import explain, train, visualize

HERE = pathlib.Path(__file__).resolve().parent
SEED = 1337
LABEL = 7  # the first test digit of this class is shown


def main(argv):
    if argv:
        run = pathlib.Path(argv[0])
    else:
        keras.utils.set_random_seed(SEED)
        run = pathlib.Path(tempfile.mkdtemp(prefix="kcnn-docs-")) / "lenet5-digits"
        result = train.fit("lenet5", "digits", train.TrainConfig(seed=SEED), output=run, verbose=0)
        print(f"LeNet-5 test accuracy {result.metrics['test']['accuracy']:.2%} ({run})")
    # The raw 8x8 digits (0..255), as a user would hand them over: the run resizes them.
    digits = kcnn.data.load("digits", normalize=False, image_size=8, seed=SEED)
    images, labels = kcnn.data.as_numpy(digits.test)
    index = int(np.flatnonzero(labels == LABEL)[0])
    image = images[index].astype(np.uint8)

    explained = explain.explain(run, image, top_k=3)
    print(f"test digit {index}, a {LABEL}: {explained.predictions}, Grad-CAM at {explained.layer}")
    visualize.save(explained.figure(Figure(figsize=(7.5, 2.6), layout="constrained")), HERE / "gradcam.png")

    figure = Figure(figsize=(9, 5.2), layout="constrained")
    top, middle, bottom = figure.subfigures(3, 1, height_ratios=[1, 1.6, 1.6])
    visualize.filters(run, figure=top)
    visualize.activation_maps(run, "conv1", image, figure=middle, columns=6)
    visualize.activation_maps(run, "conv3", image, figure=bottom, columns=8)
    visualize.save(figure, HERE / "activation_maps.png")
    print(f"wrote {HERE / 'gradcam.png'} and {HERE / 'activation_maps.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
