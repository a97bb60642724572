"""Local training: datasets, partitions across nodes, the model, and a torch trainer."""

from node.training.data import Dataset, dirichlet_partition, iid_partition, load_digits_split, partition
from node.training.model import build_model, initial_weights
from node.training.trainer import TorchTrainer, accuracy, trainer_for

__all__ = [
    "Dataset",
    "TorchTrainer",
    "accuracy",
    "build_model",
    "dirichlet_partition",
    "iid_partition",
    "partition",
    "trainer_for",
    "initial_weights",
    "load_digits_split",
]
