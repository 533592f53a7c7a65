"""Tests of the benchmarks (bench/): smoke runs and the history generator."""
