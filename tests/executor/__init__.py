"""Tests of one host's kernel (executor/): pure model tests and real network namespaces."""
