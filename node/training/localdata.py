"""A node's private training data, read from files the operator points at.

Three layouts: an `.npz` with arrays `x` (samples x features) and `y` (integer
labels); a `.csv` with one sample per row and the label in the last column
(a header row is skipped when it is not numeric); or a folder with one
sub-folder per class holding images (resized to the model's input, grey or
RGB, levels in [0, 1]). Numbers are checked: finite features, non-negative
integer labels, matching lengths.

`load_local_data` reads a file as it is (samples x features; images 8x8 grey);
`load_for_app` reads it for an app and fits it to the app's model: images at the
model's size and channels, features reshaped to its `input_shape`, labels below
its `num_classes`, or one ConfigError line saying why they cannot be.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from node.errors import ConfigError
from node.training.data import Dataset

if TYPE_CHECKING:
    from node.apps.native import FedApp

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm")


def _check(x: np.ndarray, y: np.ndarray, source: Path) -> Dataset:
    if x.ndim != 2:
        raise ConfigError(f"{source}: features must be a 2-D array (samples x features), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ConfigError(f"{source}: {len(x)} samples but labels of shape {y.shape}")
    if len(y) == 0:
        raise ConfigError(f"{source}: no samples")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{source}: features contain NaN or infinity")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ConfigError(f"{source}: labels must be integers")
    if np.any(y < 0):
        raise ConfigError(f"{source}: labels must be non-negative")
    return Dataset(x.astype(np.float32), y.astype(np.int64))


# How to write a file load_npz reads, for the messages about one it cannot.
NPZ_HOWTO = "write numeric arrays with numpy.savez(path, x=features, y=labels)"


def load_npz(path: Path) -> Dataset:
    # allow_pickle=False: an .npz can carry pickled object arrays, which run code when loaded. They
    # are never loaded, and numpy's advice to pass allow_pickle is not passed on to the operator.
    try:
        if not zipfile.is_zipfile(path):
            # np.load reads a file that is not a zip as a single pickled array, if it can.
            raise ConfigError(f"{path}: not a readable .npz (not a zip archive: damaged, truncated or another format); {NPZ_HOWTO}")
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise ConfigError(f"{path}: an .npz needs arrays named x and y (has {', '.join(archive.files)})")
            x, y = archive["x"], archive["y"]
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ConfigError(f"{path}: not a readable .npz: it holds Python objects (pickled), which are never loaded; {NPZ_HOWTO}") from None
        raise ConfigError(f"{path}: not a readable .npz ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable .npz (damaged or truncated: {exc}); {NPZ_HOWTO}") from None
    return _check(x.reshape(len(x), -1) if x.ndim > 2 else x, y, path)


def load_csv(path: Path) -> Dataset:
    rows: list[list[float]] = []
    try:
        with path.open(newline="") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row:
                    continue
                try:
                    rows.append([float(v) for v in row])
                except ValueError:
                    if lineno == 1:
                        continue  # a header
                    raise ConfigError(f"{path}:{lineno}: not a number in {row!r}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if not rows:
        raise ConfigError(f"{path}: no samples")
    if len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
        raise ConfigError(f"{path}: every row needs the same number of columns, at least two")
    table = np.asarray(rows, dtype=np.float64)
    return _check(table[:, :-1], table[:, -1], path)


def load_image_folder(path: Path, size: tuple[int, int] = (8, 8), scale: float = 1.0, mode: str = "L") -> Dataset:
    """Images under path/<label>/; labels are the sub-folder names (integers) or, else, their sorted
    order. Each is resized to `size` (width, height), converted to `mode` ("L" grey, "RGB") and
    flattened channel by channel, as (C, H, W), with levels in [0, `scale`]."""
    from PIL import Image

    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(f"{path}: no class sub-folders")
    numeric = all(c.name.isdigit() for c in classes)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for index, folder in enumerate(classes):
        label = int(folder.name) if numeric else index
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    pixels = np.asarray(img.convert(mode).resize(size), dtype=np.float32)
            # PIL refuses images of more than twice Image.MAX_IMAGE_PIXELS (decompression bombs)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise ConfigError(f"{file}: not a readable image ({exc})") from None
            if pixels.ndim == 3:
                pixels = pixels.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W), torch's layout
            xs.append(pixels.reshape(-1) / 255.0 * scale)
            ys.append(label)
    if not xs:
        raise ConfigError(f"{path}: no images in the class folders")
    return _check(np.stack(xs), np.asarray(ys, dtype=np.int64), path)


def _format(path: Path, fmt: str) -> str:
    if not path.exists():
        raise ConfigError(f"training data {path} does not exist")
    if fmt == "auto":
        fmt = "images" if path.is_dir() else path.suffix.lower().lstrip(".")
    if fmt not in ("npz", "csv", "images"):
        raise ConfigError(f"{path}: unknown data format {fmt!r} (use npz, csv or a folder of images)")
    return fmt


def load_local_data(path: str | Path, fmt: str = "auto") -> Dataset:
    """Load a node's training data; every problem is one ConfigError naming the file."""
    path = Path(path)
    fmt = _format(path, fmt)
    if fmt == "npz":
        return load_npz(path)
    if fmt == "csv":
        return load_csv(path)
    return load_image_folder(path)


def load_for_app(path: str | Path, fmt: str, app: "FedApp") -> Dataset:
    """A node's training data fitted to `app`'s model (see `fit_to_app`); image folders are read at
    the model's size and channels. Every problem is one ConfigError naming the file."""
    path = Path(path)
    if _format(path, fmt) != "images":
        return fit_to_app(load_local_data(path, fmt), app, path)
    size, mode = _image_geometry(app.input_shape, path)
    return fit_to_app(load_image_folder(path, size, mode=mode), app, path)


def _image_geometry(shape: tuple[int, ...] | None, source: Path) -> tuple[tuple[int, int], str]:
    """PIL's (width, height) and mode of images for a model taking samples of `shape`: (C, H, W)
    with C 1 (grey) or 3 (RGB); (H, W) grey; (n,) a flattened square grey image; None: 8x8 grey,
    what `load_local_data` reads."""
    if shape is None:
        return (8, 8), "L"
    if len(shape) == 3 and shape[0] in (1, 3):
        return (shape[2], shape[1]), "L" if shape[0] == 1 else "RGB"
    if len(shape) == 2:
        return (shape[1], shape[0]), "L"
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        return (side, side), "L"
    raise ConfigError(f"{source}: images cannot fit the app's model (input shape {shape}: not (1|3, H, W), (H, W) "
                      "or a square's pixel count); give it an .npz or .csv")  # fmt: skip


def fit_to_app(data: Dataset, app: "FedApp", source: Path) -> Dataset:
    """`data` shaped as `app`'s model takes it: each sample reshaped to `app.input_shape` (same
    number of values), labels below `app.num_classes`; ConfigError naming `source` when it cannot
    be. An app that declares neither gets `data` unchecked."""
    shape, classes = app.input_shape, app.num_classes
    if shape is not None:
        have, want = math.prod(data.x.shape[1:]), math.prod(shape)
        if have != want:
            raise ConfigError(f"{source}: samples have {have} features, the app's model takes {want} (input shape {shape})")
        data = Dataset(data.x.reshape(len(data), *shape), data.y)
    if classes is not None and len(data) and int(data.y.max()) >= classes:
        raise ConfigError(f"{source}: labels go up to {int(data.y.max())}, the app's model has {classes} classes (labels 0-{classes - 1})")
    return data
