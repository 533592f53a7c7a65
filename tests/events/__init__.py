"""Tests of the pure domain (events/): codec, deciders, the fold, snapshots' format."""
