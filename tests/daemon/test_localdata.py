"""A node's own data files: npz, csv and image folders, and the ways they go wrong."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from node.errors import ConfigError
from node.training.localdata import load_local_data


def test_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.default_rng(0).random((20, 64)), y=np.arange(20) % 10)

    data = load_local_data(path)

    assert data.x.shape == (20, 64) and data.x.dtype == np.float32
    assert data.y.tolist() == (np.arange(20) % 10).tolist()


def test_npz_with_pickled_objects_is_refused_unread(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))

    with pytest.raises(ConfigError, match="not a readable .npz.*never loaded") as caught:
        load_local_data(path)
    assert "allow_pickle" not in str(caught.value)  # numpy's advice, unsafe for an operator's data (#17)


@pytest.mark.parametrize("content", [b"plain text", b"PK\x03\x04 truncated", b"\x80\x04\x95 a pickle"])
def test_npz_that_is_no_zip_is_one_message_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "d.npz"
    path.write_bytes(content)

    with pytest.raises(ConfigError, match="not a readable .npz") as caught:
        load_local_data(path)

    assert "allow_pickle" not in str(caught.value) and "numpy.savez" in str(caught.value)


def test_csv_with_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("f1,f2,label\n0.1,0.2,1\n0.3,0.4,0\n")

    data = load_local_data(path)

    assert np.allclose(data.x, [[0.1, 0.2], [0.3, 0.4]])
    assert data.y.tolist() == [1, 0]


def test_image_folder(tmp_path):
    for label in ("0", "1"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (16, 16), color=255 * int(label)).save(tmp_path / "imgs" / label / f"{i}.png")

    data = load_local_data(tmp_path / "imgs")

    assert data.x.shape == (6, 64)
    assert sorted(data.y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert data.x[data.y == 1].min() == pytest.approx(1.0) and data.x[data.y == 0].max() == 0.0


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.csv", "1,2,3\n3,x,5\n", "not a number"),
        ("d.csv", "1,2,0.5\n", "labels must be integers"),
        ("d.csv", "1,2,-1\n", "non-negative"),
        ("d.csv", "1,nan,1\n", "NaN or infinity"),
        ("d.csv", "1,2,1\n1,1\n", "same number of columns"),
        ("d.txt", "hello", "unknown data format"),
        ("d.npz", "not a zip", "not a readable .npz"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_local_data(path)


def test_missing_data(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_local_data(tmp_path / "none.npz")
