"""Tests of the write side (service/): the command service, its client, faults and clusters."""
