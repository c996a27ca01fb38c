"""Segmentation data (`kcnn.data.segmentation` and its sources): the synthetic scenes,
image/mask folder pairs, mask arrays, oxford_iiit_pet's trimaps (mocked TFDS), the
checks of bad input, and the joint geometric augmentation."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kcnn import data
from kcnn.data import joint_augment, masks, scenes, segmentation
from kcnn.data.masks import IGNORE_LABEL

CLASSES = ["background", "circle", "square", "triangle"]


@pytest.fixture(scope="module")
def shapes24():
    return data.synthetic_scenes(12, image_size=24, seed=3)


# --------------------------------------------------------------------------
# Synthetic scenes.


def test_synthetic_scenes_are_seeded_exact_and_the_same_at_every_size():
    small = data.synthetic_scenes(60, image_size=16, seed=5)
    again = data.synthetic_scenes(60, image_size=16, seed=5)
    large = data.synthetic_scenes(60, image_size=48, seed=5)
    assert small["x"].shape == (60, 16, 16, 3) and small["x"].dtype == np.uint8
    assert small["y"].shape == (60, 16, 16) and small["y"].dtype == np.uint8 and small["class_names"] == CLASSES
    np.testing.assert_array_equal(small["x"], again["x"])
    np.testing.assert_array_equal(small["y"], again["y"])
    assert not np.array_equal(small["y"], data.synthetic_scenes(60, image_size=16, seed=6)["y"])
    # One geometry at every size: the 48x48 pixel whose centre is a 16x16 pixel's centre
    # (3i + 1) has its label (up to float rounding on an edge).
    assert np.mean(large["y"][:, 1::3, 1::3] == small["y"]) > 0.999
    # Every class is drawn, and a shape is told by its outline: each scene's shapes are
    # one flat colour plus noise (sigma 10), kept apart from the background's mean.
    shares = np.bincount(large["y"].reshape(-1), minlength=4) / large["y"].size
    assert shares[0] < 0.85 and shares[1:].min() > 0.02
    single = data.synthetic_scenes(20, image_size=48, seed=5, max_shapes=1)
    for image, mask in zip(single["x"], single["y"]):  # exact masks: every pixel of the shape has its colour
        inside = image[mask > 0].astype(float)
        assert len(inside) > 20 and np.abs(inside - np.median(inside, axis=0)).max() < 5.5 * scenes._NOISE


def test_the_shapes_source_is_the_same_dataset_everywhere(monkeypatch):
    monkeypatch.setattr(segmentation, "SHAPES_SCENES", 50)
    first = data.load("shapes", image_size=16, batch_size=50, shuffle=False, normalize=False, validation_split=0, test_split=0.2)
    second = data.load("shapes", image_size=16, batch_size=50, shuffle=False, normalize=False, validation_split=0, test_split=0.2)
    assert isinstance(first, data.SegmentationDataset) and first.task == "segmentation" and first.name == "shapes"
    assert (first.num_train, first.num_validation, first.num_test) == (40, 0, 10)
    assert first.class_names == CLASSES and first.palette == masks.default_palette(4) and first.ignore_label == 255
    x1, y1 = data.as_numpy(first.test)
    x2, y2 = data.as_numpy(second.test)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert y1.dtype == np.int32 and y1.shape == (10, 16, 16)
    source = data.synthetic_scenes(50, image_size=16, seed=scenes.SHAPES_SEED)
    assert any(np.array_equal(y1[0], mask) for mask in source["y"])
    with pytest.raises(ValueError, match="has a mask per image"):
        data.load("shapes", task="classification")


# --------------------------------------------------------------------------
# Masks.


def test_default_palette_is_pascal_voc_and_masks_round_trip_as_palette_pngs(tmp_path):
    palette = masks.default_palette(21)
    # VOC: 1 aeroplane (128, 0, 0), 15 person (192, 128, 128), 20 tv/monitor (0, 64, 128).
    assert palette[:4] == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert palette[15] == [192, 128, 128] and palette[20] == [0, 64, 128]
    mask = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    masks.save_mask(tmp_path / "m.png", mask, palette[:4])
    read, read_palette = masks.load_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(read, mask)
    assert read_palette[:4] == palette[:4] and read_palette[255] == [224, 224, 192]
    colored = masks.colorize(mask, palette[:4])
    assert colored.shape == (2, 3, 3) and colored[0, 1].tolist() == [128, 0, 0] and colored[1, 1].tolist() == [224, 224, 192]
    image = np.full((2, 3, 1), 100, np.uint8)
    overlay = masks.mask_overlay(image, mask, palette[:4], alpha=0.5)
    assert overlay[0, 1].tolist() == [114, 50, 50] and overlay[1, 1].tolist() == [100, 100, 100]  # ignored: untinted
    # Grey masks (and 16-bit ones) keep their values; grey saved as RGB is read; colour-coded masks are refused.
    Image.fromarray(np.array([[0, 7]], np.uint16)).save(tmp_path / "wide.png")
    assert masks.load_mask(tmp_path / "wide.png")[0].tolist() == [[0, 7]]
    Image.fromarray(np.stack([mask] * 3, -1)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(masks.load_mask(tmp_path / "grey_rgb.png")[0], mask)
    Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)).save(tmp_path / "coded.png")
    with pytest.raises(ValueError, match="coded.png.*colour-coded"):
        masks.load_mask(tmp_path / "coded.png")


# --------------------------------------------------------------------------
# Image/mask folders.


def write_pairs(root, scenes_, *, palette_every=2):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(zip(scenes_["x"], scenes_["y"])):
        Image.fromarray(image).save(root / "images" / f"s{i:02d}.{'png' if i % 2 else 'bmp'}")
        if i % palette_every:
            Image.fromarray(mask).save(root / "masks" / f"s{i:02d}.png")  # grey
        else:
            masks.save_mask(root / "masks" / f"s{i:02d}.png", mask, [[9, 9, 9], [200, 0, 0], [0, 200, 0], [0, 0, 200]])


def test_a_folder_of_pairs_loads_exactly_with_its_palette_and_ignore_value(tmp_path, shapes24):
    scenes_ = {"x": shapes24["x"], "y": shapes24["y"].copy()}
    scenes_["y"][:, 0, :] = 99  # the files' own ignore value
    write_pairs(tmp_path / "pairs", scenes_)
    (tmp_path / "pairs" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    with pytest.raises(ValueError, match=r"12 mask\(s\) hold other values.*values 99 \(288 pixels\)"):
        data.load(tmp_path / "pairs")  # 99 is no class, unless it is the ignore value
    options = dict(ignore_value=99, shuffle=False, normalize=False, validation_split=0, test_split=0, batch_size=12)
    ds = segmentation.load_segmentation(tmp_path / "pairs", **options)
    assert ds.name == str(tmp_path / "pairs") and ds.class_names == CLASSES
    assert ds.palette[1] == [200, 0, 0]  # the masks' own palette
    x, y = data.as_numpy(ds.train)
    np.testing.assert_array_equal(x.astype(np.uint8), shapes24["x"])  # lossless files, sorted by name
    expected = shapes24["y"].astype(np.int32)
    expected[:, 0, :] = IGNORE_LABEL
    np.testing.assert_array_equal(y, expected)
    resized = data.as_numpy(segmentation.load_segmentation(tmp_path / "pairs", image_size=12, **options).train)[1]
    # Nearest-neighbour resizing: each label is one the mask had (no blends).
    assert set(np.unique(resized)) <= {0, 1, 2, 3, IGNORE_LABEL} and resized.shape == (12, 12, 12)
    np.testing.assert_array_equal(resized[:, 1:], expected[:, 1::2, 1::2][:, 1:])  # pixel (2i+1) is the centre's nearest


def test_folders_of_splits_keep_their_splits(tmp_path, shapes24):
    write_pairs(tmp_path / "train", {"x": shapes24["x"][:8], "y": shapes24["y"][:8]})
    write_pairs(tmp_path / "test", {"x": shapes24["x"][8:], "y": shapes24["y"][8:]})
    ds = data.load(tmp_path, batch_size=4, validation_split=0.25)
    assert isinstance(ds, data.SegmentationDataset)
    assert (ds.num_train, ds.num_validation, ds.num_test) == (6, 2, 4)
    assert ds.class_names == ["0", "1", "2", "3"]


def test_bad_pairs_are_errors_that_count_and_name_the_files(tmp_path, shapes24):
    root = tmp_path / "pairs"
    write_pairs(root, shapes24)
    (root / "masks" / "s03.png").unlink()
    (root / "masks" / "s05.png").rename(root / "masks" / "other.png")
    with pytest.raises(ValueError) as info:
        data.load(root)
    message = str(info.value)
    assert "2 image(s) have no mask" in message and "s03.png" in message and "s05.png" in message
    assert "1 mask(s) have no image" in message and "other.png" in message
    (root / "masks" / "other.png").rename(root / "masks" / "s05.png")
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(root / "masks" / "s03.png")
    with pytest.raises(ValueError, match=r"1 images differ in size from their masks .*'images/s03.png' 24x24 and its mask 24x20"):
        data.load(root)
    stray = shapes24["y"][3].copy()
    stray[:2, :3] = 7  # 6 pixels
    Image.fromarray(stray).save(root / "masks" / "s03.png")
    with pytest.raises(ValueError, match=r"1 mask\(s\) hold other values: 'masks/s03.png' \(6 pixels\).*values 7 \(6 pixels\)"):
        data.load(root)
    (root / "classes.txt").write_text("a\nb\nc\n")  # 3 classes: the triangles (3) are out too
    with pytest.raises(ValueError, match=r"Expected mask values 0..2 \(the 3 classes\)"):
        data.load(root)
    (root / "images" / "s03.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="1 images share a name with another file"):
        data.load(root)
    with pytest.raises(ValueError, match="has a mask per image"):
        data.load(root, task="classification")


def test_mask_arrays_are_checked(shapes24):
    x, y = shapes24["x"], shapes24["y"]
    ds = data.load({"x": x, "y": y[..., None], "class_names": CLASSES}, batch_size=4)
    assert ds.task == "segmentation" and ds.class_names == CLASSES and ds.input_shape == (24, 24, 3)
    with pytest.raises(ValueError, match=r"one mask per image, of the image's size: shape \(12, 24, 24\)"):
        data.load({"x": x, "y": y[:, :20]})
    bad = y.copy()
    bad[4, 0, 0] = 9
    with pytest.raises(ValueError, match=r"'y\[4\]' \(1 pixels\).*no gap"):
        data.load((x, bad))
    with pytest.raises(ValueError, match="at least 2 classes"):
        data.load((x, np.zeros_like(y)))
    with pytest.raises(ValueError, match="also hold 255"):
        segmentation.load_segmentation((x, np.full_like(y, 255)), ignore_value=0)


# --------------------------------------------------------------------------
# oxford_iiit_pet's trimaps (TFDS, mocked).


def pet_examples(split, **kwargs):
    """A stand-in of oxford_iiit_pet's examples: trimaps 1 (pet), 2 (background), 3 (border)."""
    features = {
        "image": tf.TensorSpec((None, None, 3), tf.uint8),
        "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8),
        "file_name": tf.TensorSpec((), tf.string),
        "label": tf.TensorSpec((), tf.int64),
    }

    def examples():
        for i in range(6):
            trimap = np.full((20, 30, 1), 2, np.uint8)
            trimap[5:15, 10:20] = 1
            trimap[5, 10:20] = 3
            if split == "test" and i == 4:
                trimap[0, 0] = 7
            if split.startswith("train[90") and i == 1:  # the validation slice
                trimap = trimap[:10]
            yield {"image": np.full((20, 30, 3), 40 * i, np.uint8), "segmentation_mask": trimap, "file_name": f"{split}_{i}.jpg", "label": i}

    return tf.data.Dataset.from_generator(examples, output_signature=features)


def test_oxford_iiit_pet_trimaps(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(as_dataset_fn=lambda self, split, **kwargs: pet_examples(split)):
        ds = data.load("oxford_iiit_pet", task="segmentation", image_size=(10, 15), batch_size=3, data_dir=tmp_path, shuffle=False)
        assert isinstance(ds, data.SegmentationDataset) and ds.class_names == ["background", "pet"]
        assert ds.input_shape == (10, 15, 3) and ds.input_statistics["source_size"] == [20, 30]
        _, y = next(iter(ds.train))
        expected = np.zeros((10, 15), np.int32)
        expected[3:7, 5:10] = 1  # output pixel i reads input pixel 2i + 1 (half-pixel centres)
        expected[2, 5:10] = IGNORE_LABEL  # the border row 5 -> row 2
        np.testing.assert_array_equal(y.numpy()[0], expected)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"values other than 1, 2, 3:\] \[test_4.jpg\] \[7\]"):
            list(ds.test)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"differs in size from its image.*\] \[train\[90%:100%\]_1.jpg\] \[20 30\] \[10 30\]"):
            list(ds.validation)
        # The same TFDS name without task="segmentation": the breeds classifier's data.
        assert not isinstance(data.load("oxford_iiit_pet", data_dir=tmp_path), data.SegmentationDataset)
    with pytest.raises(ValueError, match="Unknown segmentation source 'shapez'.*Did you mean: shapes"):
        data.load("shapez", task="segmentation")


# --------------------------------------------------------------------------
# Joint augmentation.


def coordinate_scenes(n=6, size=32):
    """Images whose channels hold each pixel's column and row (x 8), masks a pattern of
    labels of (column // 4 + row // 4) % 3: an augmented image says where each of its
    pixels came from, and the mask must say the label of that place."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.stack([cols * 8, rows * 8, np.zeros_like(rows)], -1).astype(np.uint8)
    mask = ((cols // 4 + rows // 4) % 3).astype(np.uint8)
    return np.repeat(image[None], n, 0), np.repeat(mask[None], n, 0)


@pytest.mark.parametrize("policy", joint_augment.SEGMENTATION_AUGMENT_POLICIES)
def test_joint_augmentation_moves_the_mask_with_the_image(policy):
    x, y = coordinate_scenes()
    ds = data.load((x, y), augment=policy, normalize=False, batch_size=6, validation_split=0, test_split=0, seed=7)
    images, labels = next(iter(ds.train))
    images, labels = images.numpy(), labels.numpy()
    assert set(np.unique(labels)) <= {0, 1, 2, IGNORE_LABEL}  # labels are moved, never blended
    moved = labels != IGNORE_LABEL
    source_col, source_row = images[..., 0] / 8, images[..., 1] / 8  # bilinear: exact on a linear ramp
    nearest_col, nearest_row = np.rint(source_col).astype(int), np.rint(source_row).astype(int)
    # Away from ties (a point halfway between two pixels), the mask's label is that of the pixel the image came from.
    clear = moved & (np.abs(source_col % 1 - 0.5) > 0.01) & (np.abs(source_row % 1 - 0.5) > 0.01)
    np.testing.assert_array_equal(labels[clear], ((nearest_col // 4 + nearest_row // 4) % 3)[clear])
    assert clear.mean() > 0.5
    if policy == "crop":
        assert moved.all() and not np.allclose(source_col % 1, 0)  # a zoom: inside the image, scaled
        assert np.ptp(source_col, axis=(1, 2)).min() < 31 * 0.99
    else:
        # Whole-pixel shifts: the image is exact, and the new border is black with no label.
        np.testing.assert_array_equal(source_col[moved], np.round(source_col[moved]))
        assert (~moved).any() and (images[~moved] == 0).all()
    if policy != "shift":
        flipped = source_col[:, 16, 20] < source_col[:, 16, 10]
        assert flipped.any() and not flipped.all()
    # Seeded: the same seed gives the same transforms.
    again = data.load((x, y), augment=policy, normalize=False, batch_size=6, validation_split=0, test_split=0, seed=7)
    np.testing.assert_array_equal(next(iter(again.train))[1].numpy(), labels)


def test_a_callable_augments_images_and_masks_together():
    x, y = coordinate_scenes(n=2, size=8)
    flip = lambda images, labels: (images[:, :, ::-1], labels[:, :, ::-1])
    ds = data.load((x, y), augment=flip, normalize=False, batch_size=2, validation_split=0, test_split=0, shuffle=False)
    images, labels = next(iter(ds.train))
    np.testing.assert_array_equal(images.numpy(), x[:, :, ::-1].astype(np.float32))
    np.testing.assert_array_equal(labels.numpy(), y[:, :, ::-1])
    with pytest.raises(ValueError, match="segmentation dataset must be True, False, one of"):
        data.load((x, y), augment="rotate")
