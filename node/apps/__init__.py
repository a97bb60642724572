"""Apps: what a task trains. A FedLedger-native app (`FedApp`, node/apps/native.py), a built-in
one (node/apps/builtin.py), or a Flower `ClientApp` (node/apps/flower.py), all run through one
`Trainer` seam (node/abc.py)."""

from node.apps.native import Evaluation, FedApp, RoundConfig, classify, sgd_train

__all__ = ["Evaluation", "FedApp", "RoundConfig", "classify", "sgd_train"]
