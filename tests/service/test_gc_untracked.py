"""What the command service keeps of each allocation after its start is invisible to the cyclic
GC: the fold's ``FixedIp`` (a ``gc=False`` struct) and the remembered command's events (a tuple
of bytes, untracked once a collection has seen it). The start's fold is frozen
(``gc.freeze``); what came later was walked by every generation-2 collection — one
``FixedIp`` and one list per allocation, 48-76 ms a collection after ~40 k allocations in the
open-loop bench (bench/README.md "Commands arriving steadily"). On a real nats-server; a
retry is still answered from what was remembered."""

from __future__ import annotations

import asyncio
import gc

from netledger.events.state_network import FixedIp
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService


def test_fixed_ip_is_not_tracked() -> None:
    ip = FixedIp("10.0.0.5", "i-1", "fa:16:3e:00:00:01", "h1", "p1", allocated_seq=7)
    assert not gc.is_tracked(ip)
    ip.leased = True  # the fold changes it in place
    assert ip.any_lease and ip.allocated_seq == 7


async def test_allocations_leave_nothing_for_the_gc_to_walk(
    conn: Connection, service: CommandService
) -> None:
    admin = Client(conn)
    [net] = await admin.create_networks(
        label="gc", cidr="10.70.0.0/24", network_size=256, mode="flat", bridge="br70"
    )
    clients = [Client(conn) for _ in range(4)]
    # Concurrent requests on one network (a chain), on two hosts (a host's first address in
    # a network is a two-event decision: the allocation and the host's join).
    answers = await asyncio.gather(
        *(
            clients[i % 4].allocate_fixed_ip(
                f"vm-{i}", network_id=net["id"], host=f"h{i % 2}", command_id=f"cmd-{i}"
            )
            for i in range(24)
        )
    )
    gc.collect()
    fixed = service.state.networks[net["id"]].fixed
    assert len(fixed) == 24
    assert not any(gc.is_tracked(ip) for ip in fixed.values())
    remembered = [service.seen[f"cmd-{i}"] for i in range(24)]
    assert all(isinstance(v, tuple) for v in remembered)
    assert not any(gc.is_tracked(v) for v in remembered)
    # Remembered whole: a retry of each command is answered with its first answer.
    again = await asyncio.gather(
        *(
            clients[i % 4].allocate_fixed_ip(
                f"vm-{i}", network_id=net["id"], host=f"h{i % 2}", command_id=f"cmd-{i}"
            )
            for i in range(24)
        )
    )
    assert [a["address"] for a in again] == [a["address"] for a in answers]
    assert len(service.state.networks[net["id"]].fixed) == 24
