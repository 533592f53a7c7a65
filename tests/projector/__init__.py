"""Tests of the SQLite projection (projector/)."""
