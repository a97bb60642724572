"""FedLedger node: CLI, chain client, storage, training and the simulation driver."""

__version__ = "0.1.0"
