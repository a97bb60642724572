"""Datasets and how they are split across nodes.

Simulation uses scikit-learn's bundled digits (8x8 images, 1,797 samples): it
ships inside the wheel, so nothing is downloaded at run time. Non-IID splits
follow the Dirichlet label-skew scheme common in the FL literature (Hsu et
al., 2019): each class is divided among nodes in proportions drawn from
Dir(alpha); small alpha means each node sees few classes.
"""

from __future__ import annotations

import numpy as np

from node.apps.native import Dataset

__all__ = ["Dataset"]




def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Digits scaled to [0, 1], split into (train, test) with a stratified, seeded shuffle."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return stratified_split(Dataset((digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)), test_fraction, seed)


def stratified_split(data: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, test): `test_fraction` of each class, drawn from `seed`, held out; both in the
    original order."""
    x, y = data.x, data.y
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        test_idx.append(members[: int(round(len(members) * test_fraction))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    return Dataset(x[train], y[train]), Dataset(x[test], y[test])


def iid_partition(n_samples: int, n_parts: int, seed: int) -> list[np.ndarray]:
    """Shuffle and deal the indices into `n_parts` near-equal shards."""
    if n_parts < 1 or n_parts > n_samples:
        raise ValueError(f"cannot split {n_samples} samples into {n_parts} parts")
    perm = np.random.default_rng(seed).permutation(n_samples)
    return [np.sort(part) for part in np.array_split(perm, n_parts)]


def partition(train: Dataset, n_parts: int, alpha: float | None, seed: int) -> list[np.ndarray]:
    """The shards every run deals: IID when `alpha` is None, else Dirichlet(`alpha`) label skew."""
    if alpha is None:
        return iid_partition(len(train), n_parts, seed)
    return dirichlet_partition(train.y, n_parts, alpha, seed)


def dirichlet_partition(
    labels: np.ndarray, n_parts: int, alpha: float, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Label-skewed shards: class c goes to the parts in proportions ~ Dir(alpha).

    Redraws (deterministically, from the same generator) until every part has
    at least `min_size` samples, so no node is left with nothing to train on.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if n_parts * min_size > len(labels):
        raise ValueError(f"cannot give {n_parts} parts {min_size} samples each from {len(labels)}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_parts, alpha))) * len(members)).astype(int)[:-1]
            for i, chunk in enumerate(np.split(members, cuts)):
                parts[i].append(chunk)
        shards = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in shards) >= min_size:
            return shards
    raise ValueError(f"no Dirichlet({alpha}) split gave every part {min_size} samples; raise alpha")
