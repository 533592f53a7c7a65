"""Review hrev14: snapshots of the command service's fold on a real nats-server.

* a snapshot taken after this replica folded its own append from the ack *before* its reader
  delivered an earlier message of another writer (a host's sighting report) is not the fold of
  the log up to its sequence: the service's fold took the two in ack order, not log order.
"""

from __future__ import annotations

import time
import uuid

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import HostInstancesSeen
from netledger.events.ids import host_subject
from netledger.events.snapshot import state_to_wire
from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

EXECUTOR = Actor(role="system", user="executor:test")
#: snapshots only when write() is called
ON_CALL = SnapshotPolicy(every_events=5, min_interval=3600.0, check_interval=3600.0)


async def _report(conn: Connection, host: str, macs: list[str], nets: list[str]) -> int:
    """A sighting report, published as an executor publishes it."""
    ev = HostInstancesSeen(host=host, macs=macs, networks=nets, reason="change")
    env = Envelope(ev, uuid.uuid4().hex, uuid.uuid4().hex, time.time(), EXECUTOR)
    ack = await conn.js.publish(
        host_subject(host), encode(env), stream=conn.stream, headers={"Nats-Msg-Id": env.event_id}
    )
    return int(ack.seq)


@pytest.mark.xfail(
    strict=True,
    reason="the service folds its own appends from their acks ahead of its reader: an earlier"
    " message of another writer (a host's report) is folded after them, and the cross-subject"
    " parts of the fold (a host's sightings, event_time) end up unlike the log's fold; the"
    " snapshot at that seq is then not the fold of the log up to it (verify: mismatch)",
)
async def test_a_snapshot_after_an_own_append_overtook_the_reader_is_the_fold_of_the_log(
    conn: Connection,
) -> None:
    svc = CommandService(conn, snapshots=ON_CALL)
    await svc.start()
    c = Client(conn)
    try:
        [net] = await c.create_networks(label="n", cidr="10.41.0.0/24", mode="flat_dhcp")
        nid = net["id"]
        await c.allocate_fixed_ip("i-1", network_id=nid, host="h1")
        await svc.follower.catch_up()
        [mac] = [ip.mac for ip in svc.state.networks[nid].fixed.values()]
        # The reader lags (its ordered consumer is being recreated, or it simply has not been
        # delivered the message yet): the host's report is stored before the deallocation...
        await svc.follower._unsubscribe()
        report_seq = await _report(conn, "h1", [mac.lower()], [nid])
        await c.deallocate_fixed_ip("i-1", network_id=nid)  # ...which is folded from its ack
        assert svc.state.last_seq > report_seq
        await svc.follower._subscribe(svc.follower.applied_seq + 1)
        end = await svc.follower.catch_up()
        assert svc.snapshotter is not None
        stored = await svc.snapshotter.write()
        assert stored is not None and stored.seq == end
        result = await verify_snapshots(conn)
        mine = state_to_wire(svc.state)
        theirs = state_to_wire(await fold_to(conn, end))
    finally:
        await svc.close()
    # verify --snapshots says the snapshot lies (sightings, event_time)...
    assert result["equal"], result["snapshots"][0]["differences"]
    # ...and it does: the service's fold at that seq is not the log's
    assert {k: v for k, v in mine.items() if mine[k] != theirs[k]} == {}
