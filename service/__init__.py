"""The write side: the command service (lanes, OCC retries, answers, reclaims, snapshots it
writes) and the client that sends it commands. Imports events/ and journal/ only."""
