"""Tests of replay, verify, audit, archive (replay/)."""
