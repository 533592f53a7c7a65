"""Review hrev83 (issue 13: costs follow change, not age): the fold of every reader kept two
things per network ever created, deleted or not, so memory, snapshots and each NAT host's
``fixed`` set grew with the cloud's past under balanced churn (the live networks constant).
Both are fixed.

- ``State.subject_seq`` kept the subject of every deleted network (events/state.py
  ``_network_deleted``: "its subject's sequence stays"; a share view sets it at the
  retirement, ``State.retire``). The deciders never write there again (ids only grow), so it
  was one dict entry per network ever created — in the command service, in every executor's
  view, in the service's snapshots and in every ``view.snapshot``: 5 -> 17 subjects and 641
  -> 950 snapshot bytes in the service from 3 to 15 cycles below. Each reader now forgets the
  entry once it has read past it (events/prune.py): 2 -> 2 subjects, 577 -> 577 bytes.
- ``State.v4_ranges`` (gone since) kept the range of every network ever created, and the
  executors built the NAT table's ``fixed`` set from it (executor/fragments.py
  ``fixed_space``): with ranges that do not merge into one prefix, every NAT host's set gained
  an element per network ever created, and was rewritten whole at each creation. Measured in
  a churn soak (a network host serving one long-lived network, 100 cycles of create ->
  allocate -> deallocate -> delete on non-adjacent /24s): the host's nft elements went 1 -> 11
  -> 51 -> 101 at cycles 0/10/50/100. Kept on purpose when deletions were on the network's
  subject only; since ``NetworkRetired`` is on the registry every reader sees each deletion
  and drops the range.

Real nats-server, real command service, a real share view of a host that held an address in
each network (no kernel needed: what is measured is the fold)."""

from __future__ import annotations

import msgpack

from netledger.events.snapshot import state_to_wire
from netledger.events.state import State
from netledger.executor.fragments import fixed_space
from netledger.executor.view import HostView
from netledger.journal.stream import Connection, connect
from netledger.service.client import Client
from netledger.service.service import CommandService

FIRST, THEN = 3, 15


async def _cycle(c: Client, i: int) -> None:
    # /24s two apart: no two deleted ranges merge into one prefix (tenants pick their own)
    [net] = await c.create_networks(
        label=f"churn{i}", cidr=f"10.83.{2 * i}.0/24", mode="flat", bridge=f"brc{i}"
    )
    nid = str(net["id"])
    await c.allocate_fixed_ip(f"vm{i}", network_id=nid, host="h1")
    await c.deallocate_fixed_ip(f"vm{i}", network_id=nid)
    await c.request("network.delete", {"network_id": nid})


def _sizes(s: State) -> tuple[int, int, int, int]:
    return (
        len(s.subject_seq),
        len(s.unretired),  # deletions still to retire: each batch retires its own
        len(fixed_space(s)),
        len(msgpack.packb(state_to_wire(s))),
    )


async def _churn(
    conn: Connection, service: CommandService, nats_url: str
) -> dict[str, list[tuple[int, ...]]]:
    """The fold's sizes (subjects, ranges, fixed set, snapshot bytes) of the service and of h1's
    share view after FIRST and after THEN cycles."""
    c = Client(conn)
    await c.create_networks(label="keep", cidr="172.16.0.0/24", mode="flat", bridge="brkeep")
    vconn = await connect(nats_url, name="view-h1")
    view = HostView(vconn, "h1", share=True)
    await view.start()
    out: dict[str, list[tuple[int, ...]]] = {"service": [], "view": []}
    try:
        for i in range(THEN):
            await _cycle(c, i)
            if i + 1 in (FIRST, THEN):
                await service.follower.catch_up()
                await view.sync()
                assert list(service.state.networks) == ["1"]  # only "keep" is live
                out["service"].append(_sizes(service.state))
                out["view"].append(_sizes(view.state))
    finally:
        await view.close()
        await vconn.close()
    return out


def _grown(a: tuple[int, ...], b: tuple[int, ...], k: int) -> int:
    return b[k] - a[k]


async def test_deleted_networks_leave_no_subject_in_the_fold(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    sizes = await _churn(conn, service, nats_url)
    for reader in ("service", "view"):
        a, b = sizes[reader]
        # +12 each (one per cycle) before events/prune.py; flat now (measured: 2 -> 2).
        assert _grown(a, b, 0) < (THEN - FIRST) // 2, (
            f"{reader}: subjects {a[0]} -> {b[0]} (fold's snapshot bytes {a[3]} -> {b[3]})"
        )


async def test_deleted_networks_leave_no_range_in_the_nat_fixed_set_nor_a_retirement_to_write(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    sizes = await _churn(conn, service, nats_url)
    for reader in ("service", "view"):
        a, b = sizes[reader]
        assert a[1] == b[1] == 0, f"{reader}: deletions to retire {a[1]} -> {b[1]}"
        assert _grown(a, b, 2) < (THEN - FIRST) // 2, f"{reader}: fixed set {a[2]} -> {b[2]}"
