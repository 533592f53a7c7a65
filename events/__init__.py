"""The domain, pure: events, commands, codec, ids, errors, the State fold and the deciders.

No I/O here: nothing in this folder imports nats, sqlite3, pyroute2 or asyncio (a test checks it).
"""

# Every reader of the log must decode every event type: the modules that only define event
# types register them on import (host events and the revert marker are imported by the codec).
from . import placement_events as _placement_events  # noqa: F401
