"""An executor's view forgets a deleted network's subject once its start has read the share
(events/prune.py), and what the entry guarded still holds: a later reading of the subject never
folds the deleted network's messages again. Real nats-server, real command service, real
share views (one restarted from its view snapshot), a whole-log view to compare with.

* a network the view followed at its snapshot and that was deleted after it: the restart reads
  the registry first (its ``NetworkRetired``), then the network's subject from the snapshot on
  — the entry the retirement set skips the deletion (journal/follow.py), and only then, the
  start over, is it forgotten;
* a network deleted before the snapshot and forgotten (its entry is in no fold, no snapshot),
  then created again under the same id (never decided: a hand-made registry event) and needed
  by the host: read from its creation on (``read_from``), by the live view and by the view
  restarted from the snapshot, never from where the forgotten entry would say (the start of
  the log: the older network's deletion would take the new network away)."""

from __future__ import annotations

import time
from pathlib import Path

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.ids import network_subject
from netledger.events.prune import read_from
from netledger.executor.snapshot import ViewSnapshots
from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import announce, desired
from tests.executor.test_review72_recreated import created
from tests.executor.test_view_snapshot import dedicated, fold_of, kind_of, snapshot, start_view


async def test_a_view_never_folds_a_forgotten_networks_messages_again(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    await announce(conn, "h1", 0)
    await c.create_networks(label="keep", cidr="10.93.0.0/24", mode="flat", bridge="br93")
    gone = await dedicated(c, "gone", 94)  # deleted before the snapshot
    later = await dedicated(c, "later", 95)  # followed at the snapshot, deleted after it
    await c.allocate_fixed_ip("g1", network_id=gone, host="h1")
    await c.allocate_fixed_ip("l1", network_id=later, host="h1")
    live = HostView(conn, "h1", share=True)
    whole = HostView(conn, "h1", share=False)
    snaps = ViewSnapshots(conn, str(tmp_path / "h1.snapshot"), kind_of("h1"), fork=False)
    views: list[HostView] = [live, whole]
    try:
        for v in (live, whole):
            await v.start()
        assert {gone, later} <= live.networks
        await c.deallocate_fixed_ip("g1", network_id=gone)
        await c.request("network.delete", {"network_id": gone})
        for v in (live, whole):
            await v.sync()
        for state in (live.state, whole.state, service.state):
            assert network_subject(gone) not in state.subject_seq  # forgotten by every reader
        assert later in live.networks
        at = await snapshot(live, snaps)

        # After the snapshot: `later` goes; `gone` is created again and h1 gets an address.
        await c.deallocate_fixed_ip("l1", network_id=later)
        await c.request("network.delete", {"network_id": later})
        ev = created(gone, "10.96.0", "br96")
        env = Envelope(ev, "again", "again", time.time(), Actor(role="system"))
        await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)
        await service.follower.catch_up()
        again = service.state.recreated[gone]
        assert read_from(service.state, gone) == again + 1
        got = await c.allocate_fixed_ip("g2", network_id=gone, host="h1")
        assert got["address"].startswith("10.96.0.")

        restored = await start_view(conn, "h1", snaps)
        full = await start_view(conn, "h1")
        views += [restored, full]
        assert snaps.stats.loaded_seq == at
        for v in (live, whole, restored, full):
            await v.sync()
            name = f"{v.host} share={v.use_share}"
            assert gone in v.networks or not v.use_share, name
            n = v.state.networks[gone]
            assert n.net.cidr == "10.96.0.0/24" and set(n.fixed) == {got["address"]}, name
            assert later not in v.state.networks, name
            assert not v.state.unretired, name  # no deletion folded again
            assert network_subject(later) not in v.state.subject_seq, name  # forgotten since
            assert desired(v) == desired(whole), name
        assert fold_of(restored) == fold_of(full) == fold_of(live)
        assert restored.follower is not None and full.follower is not None
        assert restored.follower.handled < full.follower.handled  # the tail only
    finally:
        for v in views:
            await v.close()
