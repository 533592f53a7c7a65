"""Tests of the composition root (netledger/): CLI, serve, status, storage watcher, auth, config, metrics, deploy files, docs."""
