"""The service's fold under load on a real nats-server: clients allocating and deallocating on
two networks while hosts report what they see. Own appends are folded from their acks, often
ahead of reports and of each other's read-back (events/fold_ahead.py); once the reader has
caught up, the fold — sightings, allocated MACs per host and ``event_time`` included — is the
log's fold, nothing is held, and a snapshot of it verifies."""

from __future__ import annotations

import asyncio

from netledger.events.snapshot import state_to_wire
from netledger.events.state import State
from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.service.test_snapshot_review14 import _report

ON_CALL = SnapshotPolicy(every_events=5, min_interval=3600.0, check_interval=3600.0)
HOSTS = ["h1", "h2"]


def _wire(s: State) -> dict[str, object]:
    w = state_to_wire(s)
    w["awaiting_release"] = sorted(w["awaiting_release"])  # a dict's order: the fold's history
    w["host_macs"] = s.host_macs
    return w


async def test_after_own_appends_overtook_reports_the_fold_is_the_logs(conn: Connection) -> None:
    svc = CommandService(conn, snapshots=ON_CALL)
    await svc.start()
    c = Client(conn)
    try:
        nets = [
            (await c.create_networks(label=f"n{i}", cidr=f"10.4{i}.0.0/24", mode="flat"))[0]["id"]
            for i in range(2)
        ]
        done = asyncio.Event()

        async def client(k: int) -> None:
            nid = nets[k % 2]
            for i in range(6):
                await c.allocate_fixed_ip(f"i-{k}-{i}", network_id=nid, host=HOSTS[i % 2])
                if i % 2:
                    await c.deallocate_fixed_ip(f"i-{k}-{i - 1}", network_id=nid)

        async def host(name: str) -> None:
            while not done.is_set():
                macs = sorted(
                    ip.mac.lower()
                    for n in list(svc.state.networks.values())
                    for ip in list(n.fixed.values())
                    if ip.host == name
                )
                await _report(conn, name, macs, nets)
                await asyncio.sleep(0.005)

        reporters = [asyncio.create_task(host(h)) for h in HOSTS]
        try:
            await asyncio.gather(*(client(k) for k in range(8)))
        finally:
            done.set()
            await asyncio.gather(*reporters)
        end = await svc.follower.catch_up()
        assert svc.state.last_seq == end and not svc.state.held
        assert svc.snapshotter is not None
        stored = await svc.snapshotter.write()
        assert stored is not None and stored.seq == end
        mine = _wire(svc.state)
        result = await verify_snapshots(conn)
    finally:
        await svc.close()
    theirs = _wire(await fold_to(conn, end))
    assert {k for k in mine if mine[k] != theirs[k]} == set()
    assert result["equal"], result["snapshots"][0]["differences"]
