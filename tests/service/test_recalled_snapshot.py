"""A command put back in ``seen`` from the log after it had left it (``recalled``:
service/lane_append.py ``_recall``) sits there out of the log's order: what undid it may have
left ``seen``, so a retry whose first answer holds no more is refused (answers.py,
``forgotten``). The snapshot keeps ``seen``, and keeps which of it were put back: a service
started from it told a retry the floating IP the project had deallocated since (the first
answer, as if still held). Real nats-server, real command service, real snapshots."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from netledger.events.errors import CommandIdReused
from netledger.events.snapshot import SeenEvents
from netledger.journal.stream import Connection
from netledger.service import service as service_module
from netledger.service.client import Client
from netledger.service.service import CommandService, recalled_of
from netledger.service.snapshotter import SnapshotPolicy


@pytest.mark.parametrize("fork", [False, True])
async def test_a_recalled_retry_is_still_refused_after_a_start_from_a_snapshot(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 2)
    # loads snapshots, writes one only when asked (by a forked child, or in the event loop)
    policy = SnapshotPolicy(every_events=0, fork=fork)
    c = Client(conn)
    svc = CommandService(conn, reap_interval=None, snapshots=policy)
    await svc.start()
    try:
        await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
        first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-1")
        await c.request("floating_ip.deallocate", {"address": first["address"], "project": "p1"})
        await c.request("floating_ip.pool_create", {"pool": "o", "cidr": "203.0.113.0/28"})
        assert "fa-1" not in svc.seen
        # Inside the duplicate window: decided again, refused as stored before, put back from
        # the log; what freed the address is not known then.
        with pytest.raises(CommandIdReused):
            await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-1")
        assert "fa-1" in svc.recalled
        assert svc.snapshotter is not None
        assert await svc.snapshotter.write() is not None
    finally:
        await svc.close()

    again = CommandService(conn, reap_interval=None, snapshots=policy)
    await again.start()
    try:
        assert "fa-1" in again.seen  # (from the snapshot)
        assert again.recalled == {"fa-1"}
        with pytest.raises(CommandIdReused) as err:
            await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-1")
        assert err.value.details["address"] == first["address"]
    finally:
        await again.close()


def test_recalled_of_a_snapshot() -> None:
    seen: OrderedDict[str, SeenEvents] = OrderedDict([("a", (b"x",)), ("b", (b"y",))])
    assert recalled_of({"recalled": ["a", "gone", 3]}, seen) == {"a"}
    assert recalled_of({}, seen) == set()  # (a snapshot from before it was kept)
    assert recalled_of({"recalled": "a"}, seen) == set()
