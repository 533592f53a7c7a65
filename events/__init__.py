"""The vocabulary and the log: events, commands, codec, deciders, the command service."""

# Every reader of the log must decode every event type: the modules that only define event
# types register them on import (host events and the revert marker are imported by the codec).
from . import placement_events as _placement_events  # noqa: F401
