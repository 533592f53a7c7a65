"""The forked snapshot writer encodes at a lower priority than its parent
(``snapshot_store.CHILD_NICE``, added to the parent's niceness): on a busy host the command
service's answers come before the snapshot's encoding (bench/README.md "Commands arriving
steadily"). The niceness is read inside the child, by the ``extra`` the writer builds there,
and comes back in the snapshot it wrote."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from netledger.events.snapshot import ENCODING, loads
from netledger.events.state import State
from netledger.journal import snapshot_store
from netledger.journal.snapshot_store import write_forked


async def test_the_forked_writer_runs_nicer_than_its_parent(tmp_path: Path) -> None:
    parent = os.nice(0)
    path, sha = await write_forked(
        State(),
        OrderedDict(),
        seq=0,
        stream="S",
        created="c",
        tmpdir=str(tmp_path),
        extra=lambda: {"nice": os.nice(0)},  # (called in the child, to build its body)
    )
    try:
        with open(path, "rb") as f:
            stored = f.read()
    finally:
        os.unlink(path)
    snap = loads(stored, sha256=sha, stream="S", created="c", encoding=ENCODING)
    assert snap.extra["nice"] == min(19, parent + snapshot_store.CHILD_NICE)
    assert parent == 19 or snap.extra["nice"] > parent
    assert os.nice(0) == parent  # (the parent's own is left as it was)
