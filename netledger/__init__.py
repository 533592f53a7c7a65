"""netledger: the network state of a cloud as an append-only log of events."""

__version__ = "0.1.0"
