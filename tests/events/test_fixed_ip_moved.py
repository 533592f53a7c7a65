"""An instance that migrates takes its address with it (``FixedIpMoved``).

``fixed_ip.allocate`` naming another host for an instance that already holds its address in the
network (nova's ``migrate_instance_finish``) moves the allocation: same address, MAC and lease,
new host. Found by review: it used to answer the old allocation unchanged, so the old host's
reports — which lack the instance — proved it "gone" and reclaim freed an address in use.
Checked here on the fold the service decides on: the answer, the host counts and placements, the
reclaim evidence (only the new host's reports count, from the move on), the projection, a revert.
"""

from __future__ import annotations

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.commands import parse_command
from netledger.events.decide import Decision, Pending, decide
from netledger.events.placement import joins
from netledger.events.placement_events import NetworkHostJoined
from netledger.events.reclaim import candidates
from netledger.events.revert_compensate import StoredEvent, compensate
from netledger.events.types import FixedIpDeallocated, FixedIpMoved
from netledger.projector.project import MemoryStore
from tests.events.test_reclaim_units import ADMIN, Log, world


def _move(log: Log, instance: str, host: str | None) -> tuple[dict[str, object], int]:
    before = log.seq
    got = log.run("fixed_ip.allocate", {"instance": instance, "network_id": "1", "host": host})
    return got, log.seq - before


def test_an_allocation_naming_another_host_moves_the_address() -> None:
    log, a, b = world()
    got, appended = _move(log, "vm-b", "h2")
    assert appended == 1
    _seq, ev, _t = log.history[-1]
    assert ev == FixedIpMoved(
        network_id="1", address=b["address"], instance="vm-b", mac=b["mac"], host="h2",
        from_host="h1",
    )  # fmt: skip
    assert {k: got[k] for k in ("address", "mac", "host")} == {
        "address": b["address"],
        "mac": b["mac"],
        "host": "h2",
    }
    n = log.state.networks["1"]
    ip = n.fixed[b["address"]]
    assert (ip.host, ip.allocated_seq) == ("h2", log.seq)
    assert n.host_allocated == {"h1": 1, "h2": 1}
    assert log.state.host_macs == {"h1": {a["mac"]: 1}, "h2": {b["mac"]: 1}}
    # A retry on the new host, or one naming no host, appends nothing: it is there already.
    assert _move(log, "vm-b", "h2")[1] == 0
    assert _move(log, "vm-b", None)[1] == 0
    # Moving the last one off a host leaves it no placement there.
    _move(log, "vm-a", "h2")
    assert n.host_allocated == {"h2": 2}


def test_the_old_hosts_reports_no_longer_prove_a_migrated_instance_gone() -> None:
    log, a, b = world()
    log.report("h1", [a["mac"], b["mac"]], 1000)
    _move(log, "vm-b", "h2")
    # h1 no longer sees vm-b (it left), for far longer than the grace: not a candidate.
    log.report("h1", [a["mac"]], 1001)
    log.report("h1", [a["mac"]], 1100)
    assert candidates(log.state, 5.0) == []
    assert log.reclaim("1", "h1", 5.0) == []
    # The new host's reports are what counts now, from the move on.
    log.report("h2", [b["mac"]], 1101)
    log.report("h2", [b["mac"]], 1200)
    assert candidates(log.state, 5.0) == []
    log.report("h2", [], 1201)
    log.report("h2", [], 1210)
    [c] = candidates(log.state, 5.0)
    assert (c.instance, c.host) == ("vm-b", "h2")


def test_h2_reports_from_before_the_move_prove_nothing() -> None:
    log, _a, _b = world()
    log.report("h2", [], 1000)
    log.report("h2", [], 1100)  # h2 reported without vm-b before it arrived
    _move(log, "vm-b", "h2")
    log.report("h2", [], 1101)
    assert candidates(log.state, 5.0) == []  # absence counts from the move's sequence


def test_a_move_to_a_host_new_to_the_network_is_a_join() -> None:
    log, _a, b = world()
    ev = FixedIpMoved(
        network_id="1", address=b["address"], instance="vm-b", mac=b["mac"], host="h2",
        from_host="h1",
    )  # fmt: skip
    assert joins(log.state, [ev], set()) == [NetworkHostJoined(network_id="1", host="h2")]
    back = FixedIpMoved(
        network_id="1", address=b["address"], instance="vm-b", mac=b["mac"], host="h1",
        from_host="h2",
    )  # fmt: skip
    assert joins(log.state, [back], set()) == []  # h1 holds vm-a there already


def test_a_move_of_an_address_not_held_by_the_instance_changes_nothing() -> None:
    log, a, b = world()
    log.add(
        FixedIpMoved(
            network_id="1", address=b["address"], instance="vm-a", mac=b["mac"], host="h2",
            from_host="h1",
        )
    )  # fmt: skip
    log.add(
        FixedIpMoved(
            network_id="1", address="10.5.0.200", instance="x", mac="m", host="h2", from_host="h1"
        )
    )
    n = log.state.networks["1"]
    assert n.fixed[b["address"]].host == "h1" and n.host_allocated == {"h1": 2}
    store = MemoryStore()
    rejected = []
    for seq, ev, t in log.history:
        out = store.feed(seq, ev.subject(), Envelope(ev, f"e{seq}", f"c{seq}", t, SYSTEM))
        if out.rejected is not None:
            rejected.append(str(out.rejected["reason"]))
    assert len(rejected) == 2 and "is not allocated to vm-a" in rejected[0], rejected
    assert a["address"] != b["address"]


def test_the_projection_and_audit_index_follow_the_move() -> None:
    log, _a, b = world()
    _move(log, "vm-b", "h2")
    store = MemoryStore()
    for seq, ev, t in log.history:
        out = store.feed(seq, ev.subject(), Envelope(ev, f"e{seq}", f"c{seq}", t, SYSTEM))
        assert out.rejected is None, out.rejected
    row = store.tables["fixed_ips"][("1", b["address"])]
    assert row["host"] == "h2" and row["allocated"] == 1
    [moved] = [r for r in store.events.values() if r["type"] == "FixedIpMoved"]
    assert (moved["address"], moved["instance"], moved["host"]) == (b["address"], "vm-b", "h2")
    assert '"from_host": "h1"' in moved["data"] or '"from_host":"h1"' in moved["data"]


def test_a_revert_of_the_allocation_deallocates_it_where_it_is_now() -> None:
    log, _a, b = world()
    [alloc_seq] = [s for s, ev, _t in log.history if getattr(ev, "instance", None) == "vm-b"]
    _move(log, "vm-b", "h2")
    stored = [StoredEvent(s, ev.subject(), ev) for s, ev, _t in log.history if s >= alloc_seq]
    plan = compensate(log.state, stored)
    [undo] = plan.events
    assert isinstance(undo, FixedIpDeallocated)
    assert (undo.address, undo.host) == (b["address"], "h2")
    assert plan.skipped == [log.seq]  # the move itself is a fact about the world


def _batch(log: Log, *commands: tuple[str, dict[str, object]]) -> list[Decision]:
    """Decide ``commands`` as one round of the service does — each on the same state, with what
    the earlier ones decided in ``Pending`` — then fold all their events."""
    pending, out = Pending(), []
    for i, (name, args) in enumerate(commands):
        req = parse_command(
            name, {"command_id": f"b{log.seq}-{i}", "actor": ADMIN.to_wire(), "args": args}
        )
        d = decide(log.state, req, pending)
        pending.note(d.events)
        out.append(d)
    for d in out:
        for ev in d.events:
            log.add(ev)
    return out


def _alloc(instance: str, host: str) -> tuple[str, dict[str, object]]:
    return "fixed_ip.allocate", {"instance": instance, "network_id": "1", "host": host}


def test_a_move_decided_in_the_batch_of_the_allocation_moves_it() -> None:
    """Found by review: the second request was answered from the batch's record of the first
    (host h1, nothing appended) — no serial order of the two gives that answer."""
    log, _a, _b = world()
    first, to_h2, to_h3, again = _batch(
        log, _alloc("vm-c", "h1"), _alloc("vm-c", "h2"), _alloc("vm-c", "h3"), _alloc("vm-c", "h3")
    )
    address = first.result["address"]
    assert [type(e).__name__ for e in first.events] == ["FixedIpAllocated"]
    assert to_h2.events == [
        FixedIpMoved("1", str(address), "vm-c", str(first.result["mac"]), "h2", "h1")
    ]
    assert (to_h2.result["host"], to_h2.result["moved_from"]) == ("h2", "h1")
    assert [(e.host, e.from_host) for e in to_h3.events] == [("h3", "h2")]  # type: ignore[attr-defined]
    assert again.events == [] and again.result["host"] == "h3"
    ip = log.state.networks["1"].fixed[str(address)]
    assert ip.host == "h3" and log.state.networks["1"].host_allocated == {"h1": 2, "h3": 1}


def test_an_allocation_after_a_deallocation_in_the_batch_is_a_new_one() -> None:
    log, a, _b = world()
    gone, fresh = _batch(log, ("fixed_ip.deallocate", {"instance": "vm-a"}), _alloc("vm-a", "h2"))
    assert [type(e).__name__ for e in gone.events] == ["FixedIpDeallocated"]
    assert [type(e).__name__ for e in fresh.events] == ["FixedIpAllocated"]
    assert fresh.result["address"] != a["address"] and fresh.result["host"] == "h2"
    n = log.state.networks["1"]
    assert n.by_instance["vm-a"] == fresh.result["address"]


def test_another_projects_member_may_not_move_an_instance_nor_learn_its_address() -> None:
    """Found by review: on a network no project holds, the project check passed for any
    project, and a member of pa could move pb's instance to a host of its choice (its DHCP
    entry and floating NAT with it) — or read its address and MAC by asking again."""
    from netledger.events import errors as E
    from tests.events.decider_helpers import Ledger, member

    led = Ledger()
    (net,) = led.networks(cidr="10.0.0.0/24", mode="flat_dhcp", multi_host=True)
    led.allocate("vm-b", member("pb"), network_id=net["id"], project="pb", host="h1")
    for host in ("evil", "h1"):
        led.refuse(
            E.Forbidden, "fixed_ip.allocate", member("pa"), instance="vm-b",
            network_id=net["id"], project="pa", host=host,
        )  # fmt: skip
    moved = led.allocate("vm-b", member("pb"), network_id=net["id"], project="pb", host="h2")
    assert moved["moved_from"] == "h1"


def test_a_move_then_a_deallocation_in_one_batch_names_the_host_it_left_from() -> None:
    log, _a, _b = world()
    _move_d, gone = _batch(log, _alloc("vm-b", "h2"), ("fixed_ip.deallocate", {"instance": "vm-b"}))
    [ev] = gone.events
    assert isinstance(ev, FixedIpDeallocated) and ev.host == "h2"
    assert log.state.networks["1"].host_allocated == {"h1": 1}


def test_a_host_whose_last_address_went_earlier_in_the_batch_joins_again() -> None:
    """Found by review: vm-y, h2's only instance in the network, deallocated, and vm-x moved to
    h2 in the same round: no NetworkHostJoined — h2's executor could leave the network (its
    last instance gone) before reading the move, and never serve vm-x."""
    from netledger.events.placement import companions

    log, _a, _b = world()
    log.run("fixed_ip.allocate", {"instance": "vm-y", "network_id": "1", "host": "h2"})
    pending, joined, events = Pending(), set[tuple[str, str]](), []
    for i, (name, args) in enumerate(
        [("fixed_ip.deallocate", {"instance": "vm-y"}), _alloc("vm-a", "h2")]
    ):
        req = parse_command(name, {"command_id": f"j{i}", "actor": ADMIN.to_wire(), "args": args})
        d = decide(log.state, req, pending)
        extra = companions(log.state, d.events, joined, pending)
        pending.note(d.events)
        events += [*d.events, *extra]
    assert NetworkHostJoined(network_id="1", host="h2") in events
    for ev in events:
        log.add(ev)
    assert log.state.networks["1"].host_allocated == {"h1": 1, "h2": 1}
