"""What several parts share and that wires nothing: command line settings, output, the metrics
registry, the embedded nats-server. Imports events/ (its errors and actor) only."""
