"""Review h97 of events/prune.py in the command service: a replica forgets a deleted network's
subject as its reader reads past the deletion, whichever replica wrote it and whenever this
replica's own ack comes. Real nats-server, real command services (two replicas, one restarted
from its snapshot, one catching up through the child reader); the appends are the real ones,
only held back where a test needs an ack to come late.

* another replica's deletion read before this replica's own ack of an append on the same
  network (the ack comes after the reader passed both): nothing folded again, the entry gone;
* this replica's own deletion folded ahead of its paused reader, another writer's message
  before it: read back once, forgotten once read past;
* an own append decided on the network another replica deletes first: refused by the log,
  decided again on the fold that read the deletion (the network no longer exists);
* churn on two replicas at once, then a restart from a snapshot of the pruned fold and a
  catch-up through the child reader: every fold is the log's, every deletion retired once,
  and the OCC checks of the restarted replica name the right last messages (no conflict)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest

from netledger.events.codec import Envelope
from netledger.events.commands import parse_command
from netledger.events.errors import NetworkNotFound
from netledger.events.ids import network_subject
from netledger.events.placement_events import NetworkRetired
from netledger.events.prune import NETWORK_PREFIX
from netledger.events.snapshot import state_to_wire
from netledger.events.types import NetworkDeleted
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.service.test_service import read_all
from tests.service.test_write_path_rare_rounds import two_replicas

#: snapshots written when asked (Snapshotter.write), in the event loop
POLICY = SnapshotPolicy(every_events=0, fork=False)


async def submit(svc: CommandService, name: str, args: dict[str, Any], cid: str = "") -> Any:
    """A command decided by ``svc`` itself (not whichever replica the queue group picks)."""
    req = parse_command(
        name,
        {"command_id": cid or uuid.uuid4().hex, "actor": {"role": "admin"}, "args": args},
    )
    return await svc._submit(req)


async def flat(svc: CommandService, label: str, k: int) -> str:
    r = await submit(
        svc,
        "network.create",
        {"label": label, "cidr": f"10.{k}.0.0/24", "mode": "flat", "bridge": f"br{k}"},
    )
    nid: str = r["networks"][0]["id"]
    return nid


async def settled(conn: Connection, *svcs: CommandService) -> int:
    """Every replica has read the whole log; its last sequence."""
    end = await last_seq(conn)
    for s in svcs:
        await s.follower.wait_for(end)
    return end


async def assert_the_logs_fold(conn: Connection, *svcs: CommandService) -> None:
    """Each replica's fold is the log's (forgotten as a snapshot holds it); no deleted
    network's subject is left, nothing to retire again, and each deletion retired once."""
    end = await settled(conn, *svcs)
    whole = state_to_wire(await fold_to(conn, end))
    for s in svcs:
        assert state_to_wire(s.state) == whole
        assert not s.state.unretired
        assert not s.state.held
        for subject in s.state.subject_seq:
            if subject.startswith(NETWORK_PREFIX):
                assert subject[len(NETWORK_PREFIX) :] in s.state.networks, subject
    log = await read_all(conn)
    events = [e.event for _, _, e in log if isinstance(e, Envelope)]
    deleted = Counter(ev.network_id for ev in events if isinstance(ev, NetworkDeleted))
    retired = Counter(ev.network_id for ev in events if isinstance(ev, NetworkRetired))
    assert retired == deleted


async def test_an_own_ack_after_the_reader_read_another_replicas_deletion_folds_nothing(
    conn: Connection, nats_url: str
) -> None:
    async with two_replicas(nats_url) as (a, b):
        nid = await flat(a, "gone", 70)
        await submit(a, "fixed_ip.allocate", {"instance": "i1", "network_id": nid, "host": "h1"})
        await settled(conn, a, b)
        real = a.appender.append
        late: list[int] = []

        async def append(messages: Any, expected: Any, *args: Any, **kw: Any) -> int:
            seq = await real(messages, expected, *args, **kw)
            if not late and messages[0].msg_id == "dealloc-1:0":
                # Stored; before its ack reaches a, b reads it, deletes the network (now
                # empty), and a's reader reads the deletion and its retirement.
                late.append(seq)
                await b.follower.wait_for(seq)
                assert await submit(b, "network.delete", {"network_id": nid}) == {"deleted": nid}
                await a.follower.wait_for(await last_seq(conn))
                assert network_subject(nid) not in a.state.subject_seq  # read past: forgotten
            return seq

        a.appender.append = append  # type: ignore[method-assign]
        got = await submit(a, "fixed_ip.deallocate", {"instance": "i1"}, "dealloc-1")
        assert got["deallocated"][0]["network_id"] == nid
        assert late and a.follower.applied_seq > late[0] + 1
        assert network_subject(nid) not in a.state.subject_seq
        await assert_the_logs_fold(conn, a, b)


async def test_an_own_deletion_folded_ahead_is_read_back_once_then_forgotten(
    conn: Connection, nats_url: str
) -> None:
    async with two_replicas(nats_url) as (a, b):
        nid = await flat(a, "gone", 71)
        other = await flat(a, "other", 72)
        await settled(conn, a, b)
        await a.follower._unsubscribe()  # a's reader paused: its acks run ahead of it
        try:
            # another writer's message before a's deletion (not on the registry: a deletion
            # checks the registry, so another replica's deletion or creation there would make
            # a decide again, after reading it)
            await submit(b, "fixed_ip.allocate", {"instance": "i2", "network_id": other})
            before = a.follower.applied_seq
            assert await submit(a, "network.delete", {"network_id": nid}) == {"deleted": nid}
            deleted = a.state.seq_of(network_subject(nid))
            assert deleted > before + 1  # folded ahead, its retirement held with it
            assert a.state.held and nid not in a.state.networks
        finally:
            await a.follower._subscribe(a.follower.applied_seq + 1)
        await a.follower.wait_for(deleted + 1)
        assert network_subject(nid) not in a.state.subject_seq
        await assert_the_logs_fold(conn, a, b)


async def test_an_own_append_on_a_network_another_replica_deleted_first_is_decided_again(
    conn: Connection, nats_url: str
) -> None:
    async with two_replicas(nats_url) as (a, b):
        nid = await flat(a, "gone", 73)
        await settled(conn, a, b)
        real = a.appender.append
        raced: list[int] = []

        async def append(messages: Any, expected: Any, *args: Any, **kw: Any) -> int:
            if not raced and network_subject(nid) in expected:
                # a decided on the network as it was; b deletes it before a's append goes
                assert await submit(b, "network.delete", {"network_id": nid}) == {"deleted": nid}
                raced.append(await last_seq(conn))
            return await real(messages, expected, *args, **kw)

        a.appender.append = append  # type: ignore[method-assign]
        conflicts = a.stats.conflicts
        with pytest.raises(NetworkNotFound):  # no host: one event, no placement
            await submit(a, "fixed_ip.allocate", {"instance": "i3", "network_id": nid}, "late")
        assert raced and a.stats.conflicts == conflicts + 1
        assert await last_seq(conn) == raced[0]  # nothing of a's appended
        await assert_the_logs_fold(conn, a, b)


async def _churn(c: Client, k: int, rounds: int) -> None:
    """One client's networks: created, used on two hosts, emptied, deleted (by whichever
    replica the queue group picks); the last one kept, in use."""
    for r in range(rounds):
        (net,) = await c.create_networks(
            label=f"c{k}-{r}", cidr=f"10.{100 + k}.{r}.0/24", mode="flat", bridge=f"b{k}x{r}"
        )
        nid = str(net["id"])
        for i in range(3):
            await c.allocate_fixed_ip(f"vm-{k}-{r}-{i}", network_id=nid, host=f"h{i % 2}")
        if r == rounds - 1:
            return
        for i in range(3):
            await c.deallocate_fixed_ip(f"vm-{k}-{r}-{i}", network_id=nid)
        assert await c.request("network.delete", {"network_id": nid}) == {"deleted": nid}


async def test_churn_on_two_replicas_then_a_restart_from_the_pruned_snapshot(
    conn: Connection, nats_url: str
) -> None:
    conns = [await connect(nats_url, name=f"p{i}") for i in range(3)]
    for x in conns:
        await ensure_stream(x)
    a = CommandService(conns[0], snapshots=POLICY, reap_interval=None)
    b = CommandService(conns[1], reap_interval=None)
    started: list[CommandService] = []
    try:
        for s in (a, b):
            await s.start()
            started.append(s)
        clients = [Client(conn) for _ in range(3)]
        await asyncio.gather(*(_churn(c, k, 4) for k, c in enumerate(clients)))
        await assert_the_logs_fold(conn, a, b)
        assert a.snapshotter is not None
        stored = await a.snapshotter.write()
        assert stored is not None
        # forgotten in the snapshot: only the live networks' subjects are left
        live = {network_subject(n) for n in a.state.networks}
        assert {s for s in a.state.subject_seq if s.startswith(NETWORK_PREFIX)} == live
        await a.close()
        started.remove(a)

        # b goes on alone on the live networks (and deletes and creates more) ...
        await asyncio.gather(*(_churn(c, k + 3, 2) for k, c in enumerate(clients)))
        keep = sorted(b.state.networks, key=int)
        for i, nid in enumerate(keep):
            await submit(b, "fixed_ip.allocate", {"instance": f"b-{i}", "network_id": nid})
        # ... then a starts from its snapshot, and a third replica from the log through the
        # child reader; each appends on every live network, b's last messages there first.
        a2 = CommandService(conns[0], snapshots=POLICY, reap_interval=None)
        await a2.start()
        started.append(a2)
        assert a2.snapshotter is not None and a2.snapshotter.stats.loaded_seq == stored.seq
        c3 = CommandService(conns[2], reap_interval=None, child_catch_up=1)
        await c3.start()
        started.append(c3)
        assert c3.fold_report.by_child > 0
        await assert_the_logs_fold(conn, a2, b, c3)
        for svc, tag in ((a2, "a"), (c3, "c")):
            before = svc.stats.conflicts
            for i, nid in enumerate(keep):
                await submit(
                    svc, "fixed_ip.allocate", {"instance": f"{tag}-{i}", "network_id": nid}
                )
            assert svc.stats.conflicts == before  # every OCC check named the subject's last
            await settled(conn, a2, b, c3)
        await assert_the_logs_fold(conn, a2, b, c3)
        again = await a2.snapshotter.write()
        assert again is not None
        report = await verify_snapshots(conn)
        assert report["equal"], report
    finally:
        for s in started:
            await s.close()
        for x in conns:
            await x.close()
