"""The forked child that writes an executor's view snapshot holds none of the executor's file
descriptors: it closes every one it inherits but stdin, stdout and stderr, as the service's
snapshot uploader does (journal/forked.py ``close_inherited``). It kept them all open — the
executor's NATS connection, its event loop's, its netlink sockets, whatever pipes it had —
for as long as it encoded (found by review).

What the child holds is read inside it: the ``extra`` a snapshot writer builds its body with
runs there, and this one records the child's ``/proc/self/fd``. Real nats-server, a real fork.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netledger.events.state import State
from netledger.executor.snapshot import ViewKind, ViewSnapshots
from netledger.journal.stream import Connection


def recording_fds(out: Path) -> Callable[[], dict[str, Any]]:
    """An ``extra`` that writes the descriptors of the process it runs in to ``out``."""

    def extra() -> dict[str, Any]:
        held: dict[str, str] = {}
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # (the listing's own, closed by now)
                held[name] = os.readlink(f"/proc/self/fd/{name}")
        out.write_text(json.dumps({"pid": os.getpid(), "fds": held}))
        return {}

    return extra


def sockets_of_this_process() -> set[str]:
    held = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("socket:"):
                held.add(target)
    return held


async def test_the_view_snapshot_writer_holds_none_of_the_executors_descriptors(
    conn: Connection, tmp_path: Path
) -> None:
    out = tmp_path / "child-fds.json"
    snaps = ViewSnapshots(
        conn, str(tmp_path / "state" / "view.snapshot"), ViewKind("h1", True, False)
    )
    mine, theirs = socket.socketpair()  # (one more socket of the parent's, besides NATS's)
    try:
        parent = sockets_of_this_process()
        assert f"socket:[{os.fstat(mine.fileno()).st_ino}]" in parent
        assert len(parent) >= 3  # the pair, and the connection to nats-server at least
        size = await snaps.write(State(), 0, 0, recording_fds(out), await snaps.created())
    finally:
        mine.close()
        theirs.close()
    assert size > 0 and snaps.stats.written == 1
    child = json.loads(out.read_text())
    assert child["pid"] != os.getpid()  # (built in the forked child)
    assert {int(fd): to for fd, to in child["fds"].items() if int(fd) > 2} == {}
