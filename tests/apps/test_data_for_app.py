"""An operator's own data fitted to the app's model (node/training/localdata.py:load_for_app):
images at the model's size and channels, features reshaped to its input, labels within its
classes; data that cannot fit is refused in one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from node.apps import FedApp
from node.apps.builtin import DIGITS_MLP, MNIST_CNN
from node.errors import ConfigError
from node.training.localdata import load_for_app, load_local_data


def _image_folder(root, size, mode="L", colours=None, per_class=3):
    """root/<label>/<i>.png for labels 0 and 1: a flat image of one colour per class."""
    colours = colours or {0: 0, 1: 255}
    for label, colour in colours.items():
        (root / str(label)).mkdir(parents=True)
        for i in range(per_class):
            Image.new(mode, size, color=colour).save(root / str(label) / f"{i}.png")
    return root


def test_a_folder_of_28x28_pngs_gives_mnist_cnn_its_1x28x28_samples(tmp_path):
    # Prepare: real digit-like images, one white square on black per class 1 image
    folder = _image_folder(tmp_path / "imgs", (28, 28))
    marked = np.zeros((28, 28), np.uint8)
    marked[5:9, 10:20] = 255
    Image.fromarray(marked).save(folder / "1" / "marked.png")

    # Execute
    data = load_for_app(folder, "auto", MNIST_CNN)

    # Assert: torch's (n, C, H, W) layout, levels in [0, 1], the pixels where they were
    assert data.x.shape == (7, 1, 28, 28) and data.x.dtype == np.float32
    assert sorted(data.y.tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert data.x.min() == 0.0 and data.x.max() == pytest.approx(1.0)
    square = data.x[(data.x[:, 0].sum(axis=(1, 2)) == 40)]
    assert square.shape == (1, 1, 28, 28) and square[0, 0, 5:9, 10:20].min() == pytest.approx(1.0)


def test_images_of_another_size_are_resized_to_the_model(tmp_path):
    folder = _image_folder(tmp_path / "imgs", (64, 48))

    data = load_for_app(folder, "images", MNIST_CNN)

    assert data.x.shape == (6, 1, 28, 28)


def test_rgb_images_for_a_3_channel_model_keep_their_channels_in_torch_order(tmp_path):
    # Prepare: class 0 pure red, class 1 pure blue; a model taking 3 x 10 x 12 (C, H, W)
    folder = _image_folder(tmp_path / "imgs", (40, 30), "RGB", {0: (255, 0, 0), 1: (0, 0, 255)})
    app = FedApp(model=lambda: None, load_data=lambda c: None, input_shape=(3, 10, 12), num_classes=2)

    # Execute
    data = load_for_app(folder, "auto", app)

    # Assert
    assert data.x.shape == (6, 3, 10, 12)
    red, blue = data.x[data.y == 0], data.x[data.y == 1]
    assert red[:, 0].min() == pytest.approx(1.0) and red[:, 1:].max() == 0.0
    assert blue[:, 2].min() == pytest.approx(1.0) and blue[:, :2].max() == 0.0


def test_digits_mlp_reads_an_image_folder_as_before(tmp_path):
    folder = _image_folder(tmp_path / "imgs", (16, 16))

    fitted = load_for_app(folder, "auto", DIGITS_MLP)
    plain = load_local_data(folder)

    assert fitted.x.shape == (6, 64)
    np.testing.assert_array_equal(fitted.x, plain.x)
    np.testing.assert_array_equal(fitted.y, plain.y)


def test_an_npz_of_28x28_arrays_is_reshaped_for_mnist_cnn(tmp_path):
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).random((10, 28, 28))
    np.savez(path, x=x, y=np.arange(10))

    data = load_for_app(path, "auto", MNIST_CNN)

    assert data.x.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(data.x[:, 0], x.astype(np.float32))


def test_a_20_feature_csv_is_refused_for_digits_mlp_in_one_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\n".join(",".join(["0.5"] * 20 + [str(i % 10)]) for i in range(5)) + "\n")

    with pytest.raises(ConfigError) as caught:
        load_for_app(path, "auto", DIGITS_MLP)

    assert str(caught.value) == f"{path}: samples have 20 features, the app's model takes 64 (input shape (64,))"


def test_labels_above_the_models_classes_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((13, 64)), y=np.arange(13))

    with pytest.raises(ConfigError) as caught:
        load_for_app(path, "npz", DIGITS_MLP)

    assert str(caught.value) == f"{path}: labels go up to 12, the app's model has 10 classes (labels 0-9)"


def test_an_app_that_declares_no_shape_gets_the_data_unchecked(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((13, 20)), y=np.arange(13))
    app = FedApp(model=lambda: None, load_data=lambda c: None)

    data = load_for_app(path, "auto", app)

    assert data.x.shape == (13, 20) and int(data.y.max()) == 12


def test_images_for_a_model_no_image_fits_are_refused(tmp_path):
    folder = _image_folder(tmp_path / "imgs", (8, 8))
    app = FedApp(model=lambda: None, load_data=lambda c: None, input_shape=(20,), num_classes=2)

    with pytest.raises(ConfigError, match="images cannot fit the app's model .input shape .20,.") as caught:
        load_for_app(folder, "auto", app)
    assert "\n" not in str(caught.value)


def test_a_decompression_bomb_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    # PIL refuses images over twice MAX_IMAGE_PIXELS; lowered here so the bomb stays small
    folder = _image_folder(tmp_path / "imgs", (8, 8))
    Image.new("L", (100, 100)).save(folder / "0" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(ConfigError, match="bomb.png: not a readable image") as caught:
        load_for_app(folder, "auto", MNIST_CNN)
    assert "\n" not in str(caught.value)


def test_missing_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="none.csv does not exist"):
        load_for_app(tmp_path / "none.csv", "auto", MNIST_CNN)


def test_an_unknown_format_is_refused(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("1,2\n")

    with pytest.raises(ConfigError, match="unknown data format 'txt'"):
        load_for_app(path, "auto", MNIST_CNN)
