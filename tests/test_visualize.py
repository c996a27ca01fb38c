"""kcnn.visualize: the arrays behind the pictures equal a NumPy reference, the figures
hold what they say, and no pyplot state is touched."""

import numpy as np
import pytest
from matplotlib.figure import Figure

import kcnn
from kcnn import data as kdata
from kcnn import train, visualize
from kcnn.train.driver import save_run


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A LeNet-5 run folder (random weights) on the digits."""
    folder = tmp_path_factory.mktemp("visualize") / "run"
    save_run(kcnn.lenet5(), kdata.load("digits"), train.TrainConfig(epochs=1), folder)
    return folder


def test_filter_images_are_the_kernels_scaled_per_filter():
    model = kcnn.lenet5()
    kernel = np.random.default_rng(0).normal(size=(5, 5, 1, 6)).astype(np.float32)
    kernel[..., 5] = 0.25  # a constant filter
    model.get_layer("conv1").kernel.assign(kernel)
    images = visualize.filter_images(model)
    assert visualize.first_conv_layer(model) == "conv1" and images.shape == (6, 5, 5, 1)
    for index in range(5):
        k = kernel[..., 0, index].astype(np.float64)
        np.testing.assert_allclose(images[index, ..., 0], (k - k.min()) / (k.max() - k.min()), rtol=1e-6)
    np.testing.assert_array_equal(images[5], np.full((5, 5, 1), 0.5, np.float32))


def test_filter_images_of_rgb_and_deeper_layers():
    model = kcnn.convnet(filters=(4, 8), convs_per_stage=1, kernel_size=3)
    first = model.get_layer("block1_conv1").kernel.numpy()  # (3, 3, 3, 4): RGB filters
    rgb = visualize.filter_images(model)
    assert rgb.shape == (4, 3, 3, 3)
    np.testing.assert_allclose(rgb[2], (first[..., 2] - first[..., 2].min()) / np.ptp(first[..., 2]), rtol=1e-5)
    second = model.get_layer("block2_conv1").kernel.numpy().mean(axis=2)  # (3, 3, 8): channel means
    grey = visualize.filter_images(model, "block2_conv1")
    assert grey.shape == (8, 3, 3, 1)
    np.testing.assert_allclose(grey[7, ..., 0], (second[..., 7] - second[..., 7].min()) / np.ptp(second[..., 7]), rtol=1e-5)
    with pytest.raises(ValueError, match=r"Expected a convolution with a 4D kernel. Received: layer='fc1'"):
        visualize.filter_images(model, "fc1")


def test_filters_figure(lenet_run):
    figure = visualize.filters(lenet_run)
    assert isinstance(figure, Figure)
    drawn = [ax for ax in figure.axes if ax.images]
    assert len(drawn) == 6 and [ax.get_title() for ax in drawn] == [f"#{i}" for i in range(1, 7)]
    assert figure.get_suptitle() == "conv1: 6 filters of 5x5"
    np.testing.assert_allclose(drawn[0].images[0].get_array(), visualize.filter_images(lenet_run)[0, ..., 0])


def test_activations_are_the_layers_outputs_on_the_preprocessed_image(lenet_run):
    model, metadata = train.load(lenet_run)
    image = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)  # raw, another size
    maps = visualize.activations(lenet_run, "conv1", [image])
    assert maps.shape == (1, 28, 28, 6)
    # A NumPy reference: conv1 is a valid 5x5 convolution with ReLU on the preprocessed image.
    x = kdata.preprocess_images([image], metadata["preprocessing"])[0, :, :, 0].astype(np.float64)
    kernel, bias = (w.astype(np.float64) for w in model.get_layer("conv1").get_weights())
    windows = np.lib.stride_tricks.sliding_window_view(x, (5, 5))  # (28, 28, 5, 5)
    expected = np.maximum(np.einsum("ijkl,klf->ijf", windows, kernel[:, :, 0, :]) + bias, 0.0)
    np.testing.assert_allclose(maps[0], expected, rtol=1e-4, atol=1e-5)


def test_activation_maps_figure(lenet_run, tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    figure = visualize.activation_maps(lenet_run, "conv3", image)
    maps = [ax for subfigure in figure.subfigs for ax in subfigure.axes if ax.images]
    assert len(maps) == 1 + 16  # the input, then one per channel
    assert figure.subfigs[1].get_suptitle() == "conv3: 16 maps of 10x10"
    expected = visualize.activations(lenet_run, "conv3", [image])[0]
    np.testing.assert_allclose(maps[3].images[0].get_array(), expected[..., 2], rtol=1e-6)
    few = visualize.activation_maps(lenet_run, "conv3", image, max_maps=4)
    assert few.subfigs[1].get_suptitle() == "conv3: 16 maps of 10x10 (first 4)"
    with pytest.raises(ValueError, match=r"output is a feature map .* Received: layer='fc6' with output shape \(84,\)"):
        visualize.activation_maps(lenet_run, "fc6", image)
    with pytest.raises(ValueError, match=r"has no layer 'conv9'"):
        visualize.activation_maps(lenet_run, "conv9", image)
    visualize.save(figure, tmp_path / "maps.png")
    assert [path.name for path in tmp_path.iterdir()] == ["maps.png"]
    assert (tmp_path / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overlay_blends_the_colormap_over_the_image():
    from matplotlib import colormaps

    image = np.full((4, 6), 200.0)
    heatmap = np.zeros((4, 6))
    heatmap[1, 2] = 1.0
    blended = visualize.overlay(image, heatmap, alpha=0.25, colormap="viridis")
    assert blended.shape == (4, 6, 3)
    viridis = colormaps["viridis"]
    np.testing.assert_allclose(blended[0, 0], 0.75 * 200 / 255 + 0.25 * np.array(viridis(0.0)[:3]))
    np.testing.assert_allclose(blended[1, 2], 0.75 * 200 / 255 + 0.25 * np.array(viridis(1.0)[:3]))
    # A smaller heat map is resized to the image (a constant one stays constant).
    np.testing.assert_allclose(visualize.overlay(np.zeros((8, 8, 3)), np.ones((2, 2)), alpha=1.0, colormap="gray"), 1.0)


def test_no_pyplot_figures(lenet_run):
    # Keras imports pyplot itself; what matters is that kcnn leaves no figure in its
    # global registry (which would grow with every call, and show in notebooks twice).
    from matplotlib import pyplot

    before = pyplot.get_fignums()
    visualize.filters(lenet_run)
    visualize.activation_maps(lenet_run, "conv1", np.zeros((32, 32, 1), np.uint8))
    assert pyplot.get_fignums() == before
