"""The log's I/O: the JetStream connection, follower and appender, the log's health, and the
KV / object-store buckets beside the stream (liveness, snapshots). Imports events/ only."""
