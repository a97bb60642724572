"""The root of every error the node raises on purpose.

The CLI catches `FedLedgerError` and prints its message as one line; anything
else is a bug and keeps its traceback.
"""


class FedLedgerError(Exception):
    """Base class of every expected, user-facing failure in the node."""


class StorageError(FedLedgerError):
    """Raised when content cannot be stored, found, or verified against its CID."""


class CIDError(StorageError):
    """Raised when a CID string is malformed or uses an unsupported codec."""


class IntegrityError(StorageError):
    """Raised when bytes do not hash to the CID they were fetched under."""


class ChainError(FedLedgerError):
    """Raised when a transaction reverts or the chain cannot be reached."""


class ConfigError(FedLedgerError):
    """Raised for a bad command-line value, config file or deployment file."""
