"""The command service forgets a deleted network's subject once its reader has read past the
deletion (events/prune.py) — and every use of that entry still holds. Real nats-server, real
command services (one restarted from its snapshot).

* its snapshots hold the log's fold as ``verify --snapshots`` folds it (forgotten alike);
* a revert naming the deleted network's messages is judged on them (refused: the network no
  longer exists), not answered "the service has not seen them yet" for ever;
* a network created again under the deleted id (never decided: a hand-made registry event) is
  the new network, and its first append names the subject's real last message (the OCC
  check: service/recreated.py asks the log) — also after a restart from a snapshot taken when
  the fold had forgotten the subject."""

from __future__ import annotations

import time

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.errors import NetledgerError
from netledger.events.ids import network_subject
from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.events.snapshot import state_to_wire
from netledger.journal.stream import Connection, last_seq
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.revert_cli import revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.executor.test_review72_recreated import created

#: snapshots written when asked (Snapshotter.write), in the event loop
POLICY = SnapshotPolicy(every_events=0, fork=False)


async def test_a_deleted_network_is_forgotten_and_every_use_of_its_entry_holds(
    conn: Connection,
) -> None:
    c = Client(conn)
    svc = CommandService(conn, snapshots=POLICY)
    await svc.start()
    try:
        await c.create_networks(label="keep", cidr="10.90.0.0/24", mode="flat", bridge="br90")
        (net,) = await c.create_networks(
            label="gone", cidr="10.91.0.0/24", mode="flat", bridge="br91"
        )
        nid = str(net["id"])
        subject = network_subject(nid)
        await c.allocate_fixed_ip("i1", network_id=nid, host="h1", command_id="alloc-1")
        await c.deallocate_fixed_ip("i1", network_id=nid)
        await c.request("network.delete", {"network_id": nid})
        deleted = await svc.follower.catch_up()
        assert subject not in svc.state.subject_seq  # read past: forgotten
        assert not svc.state.unretired  # the deletion folded once
        assert state_to_wire(svc.state) == state_to_wire(await fold_to(conn, deleted))

        # A revert of the deleted network's allocation: judged, refused, nothing appended.
        with pytest.raises(NetledgerError) as info:
            await revert(conn, c, command_id="alloc-1")
        assert info.value.code == "revert_conflict"
        assert f"network {nid} no longer exists" in info.value.message
        assert await last_seq(conn) == deleted

        assert svc.snapshotter is not None
        stored = await svc.snapshotter.write()
        assert stored is not None and stored.seq == deleted
        report = await verify_snapshots(conn)
        assert report["equal"], report
    finally:
        await svc.close()

    # The same id created again by hand while no service runs; a service starting from the
    # snapshot (which forgot the subject) folds it, and appends to the new network.
    ev = created(nid, "10.92.0", "br92")
    env = Envelope(ev, "again", "again", time.time(), Actor(role="system"))
    await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)
    again = CommandService(conn, snapshots=POLICY)
    await again.start()
    try:
        assert again.snapshotter is not None
        assert again.snapshotter.stats.loaded_seq == deleted
        assert again.state.recreated == {nid: deleted + 1}
        assert subject not in again.state.subject_seq
        got = await c.allocate_fixed_ip("i2", network_id=nid, host="h1")
        assert got["address"].startswith("10.92.0.")
        assert again.state.learned == {subject: deleted - 1}  # the older network's deletion
        end = await again.follower.catch_up()
        assert set(again.state.networks[nid].fixed) == {got["address"]}
        assert state_to_wire(again.state) == state_to_wire(await fold_to(conn, end))
        stored = await again.snapshotter.write()
        assert stored is not None and stored.seq == end
        report = await verify_snapshots(conn)
        assert report["equal"], report
        # Deleted again: forgotten again, with what was learned of it.
        await c.deallocate_fixed_ip("i2", network_id=nid)
        await c.request("network.delete", {"network_id": nid})
        end = await again.follower.catch_up()
        assert subject not in again.state.subject_seq
        assert not again.state.recreated and not again.state.learned
        assert state_to_wire(again.state) == state_to_wire(await fold_to(conn, end))
    finally:
        await again.close()
