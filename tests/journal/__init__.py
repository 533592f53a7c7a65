"""Tests of the log's I/O (journal/): liveness buckets, a log that went backwards."""
