"""A node's private training data, read from files the operator points at.

Three layouts: an `.npz` with arrays `x` (samples x features) and `y` (integer
labels); a `.csv` with one sample per row and the label in the last column
(a header row is skipped when it is not numeric); or a folder with one
sub-folder per class holding images (resized to the model's input and
converted to grey levels in [0, 1]). Numbers are checked: finite features,
non-negative integer labels, matching lengths.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from node.errors import ConfigError
from node.training.data import Dataset

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


def load_image_folder(path: Path, size: tuple[int, int] = (8, 8), scale: float = 1.0) -> Dataset:
    """Images under path/<label>/; labels are the sub-folder names (integers) or, else, their sorted order."""
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
                    grey = img.convert("L").resize(size)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{file}: not a readable image ({exc})") from None
            xs.append(np.asarray(grey, dtype=np.float32).reshape(-1) / 255.0 * scale)
            ys.append(label)
    if not xs:
        raise ConfigError(f"{path}: no images in the class folders")
    return _check(np.stack(xs), np.asarray(ys, dtype=np.int64), path)


def load_local_data(path: str | Path, fmt: str = "auto") -> Dataset:
    """Load a node's training data; every problem is one ConfigError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"training data {path} does not exist")
    if fmt == "auto":
        fmt = "images" if path.is_dir() else path.suffix.lower().lstrip(".")
    if fmt == "npz":
        return load_npz(path)
    if fmt == "csv":
        return load_csv(path)
    if fmt == "images":
        return load_image_folder(path)
    raise ConfigError(f"{path}: unknown data format {fmt!r} (use npz, csv or a folder of images)")
