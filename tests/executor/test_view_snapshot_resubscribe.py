"""A view snapshot taken right after the share grew in the background skips nothing.

The daemon writes its snapshot at ``follower.position`` once the view is settled (no
resubscription running), without a catch-up first (executor/daemon.py ``_snapshot``). A
catch-up (the periodic pass's) may have put ``position`` past the last message the follower
handled, the rest of the stream then being outside the share. When the share then grows, the
new consumer reads the new network on from the last message *handled*: its messages between
that and ``position`` arrive a little later. A snapshot taken meanwhile said "everything of the
share up to ``position``" while it lacked them, and a restart from it never read them.
Real nats-server and command service; the new consumer's first deliveries held back as a
network would hold them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from netledger.executor.snapshot import ViewSnapshots
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService

from .test_executor_share import announce
from .test_view_snapshot import dedicated, fold_of, kind_of, start_view


async def test_a_snapshot_right_after_the_share_grew_in_the_background_skips_nothing(
    conn: Connection, service: CommandService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Client(conn)
    for h in ("h1", "h2"):
        await announce(conn, h, 0)
    x = await dedicated(c, "x", 210)
    await c.allocate_fixed_ip("seed", network_id=x, host="h2")
    # The background task grows the share after a pause (executor/share.py resubscribe_pause):
    # long enough here for a periodic pass's catch-up to come first.
    monkeypatch.setattr("netledger.executor.view.resubscribe_pause", lambda cost, since: 0.5)
    v = await start_view(conn, "h1")
    others: list[Any] = []
    f = v.follower
    assert f is not None
    try:
        assert x not in v.networks
        before = v.resubscriptions
        await c.allocate_fixed_ip("mine", network_id=x, host="h1")  # h1 joins x
        await c.allocate_fixed_ip("other", network_id=x, host="h2")  # x only: not h1's share
        await f.catch_up()  # the periodic pass's: nothing more of the share is pending
        assert v.resubscriptions == before, "the share grew before the catch-up"
        assert f.position > f.applied_seq  # the stream's end is past h1's last message
        held: list[Any] = []
        deliver = f._on_msg
        f._on_msg = held.append  # type: ignore[method-assign]
        for _ in range(400):
            if v.resubscriptions > before:
                break
            await asyncio.sleep(0.005)
        assert v.resubscriptions > before and x in v.networks
        # As the daemon writes it: settled, at the follower's position, no catch-up first.
        assert v.settled()
        snaps = ViewSnapshots(conn, str(tmp_path / "view.snapshot"), kind_of("h1"), fork=False)
        created = await snaps.created()
        await snaps.write(v.state, f.position, f.handled, v.snapshot_extra, created)
        f._on_msg = deliver  # type: ignore[method-assign]
        for msg in held:
            deliver(msg)
        await v.sync()
        restored = await start_view(conn, "h1", ViewSnapshots(conn, snaps.path, kind_of("h1")))
        full = await start_view(conn, "h1")
        others += [restored, full]
        assert fold_of(restored) == fold_of(full)
        assert fold_of(v) == fold_of(full)
    finally:
        for w in [v, *others]:
            await w.close()
