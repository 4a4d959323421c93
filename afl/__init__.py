"""afl: asynchronous federated learning in deterministic virtual time."""

__version__ = "0.1.0"
