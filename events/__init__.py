"""The vocabulary and the log: events, commands, codec, deciders, the command service."""
