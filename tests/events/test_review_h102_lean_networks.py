"""Review h102 of the lean networks of a view (3ff8494 ``NO_OFFSETS`` and shared reserved
offsets, 8e5e429 the compact ``NetworkCreated``, 30d1ce7 ``NO_JOINS``): random allocations,
explicit addresses beyond the mark, deallocations, leases and releases, joins, deletions and
creations over several networks of one size (their reserved offsets shared), with snapshot
round trips at random points, checked against

* a twin ledger deciding the same requests without any snapshot (the same answers, the same
  state: a restored pool or ``joined`` is kept as the fold keeps its own);
* folds of the same log from its bytes by each decoder (``decode`` and ``decode_fast`` through
  ``fold_message``, ``wire_of`` through ``fold_wire``: each keeps the event compact);
* for every network, its free offsets counted by brute force: every usable offset that no
  address of ``fixed`` holds (the pool's ``freed``/``ahead`` lists made on first use).

And the shared values stay what they were: empty, immutable, one object."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedList

from netledger.events import errors as E
from netledger.events.codec import Envelope, decode, encode
from netledger.events.placement_events import NetworkHostJoined
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.state_network import NO_JOINS
from netledger.events.state_offsets import NO_OFFSETS, OffsetPool
from netledger.events.types import Event
from netledger.events.wire_fast import decode_fast, wire_of

from .decider_helpers import Ledger

HOSTS = ("h1", "h2", "h3")


class Logged(Ledger):
    """A ledger that keeps what it folded as the log stores it: (seq, subject, bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.raws: list[tuple[int, str, bytes]] = []

    def fold(self, req: Any, events: list[Event]) -> None:
        for i, ev in enumerate(events):
            self.seq += 1
            env = Envelope(ev, f"{req.command_id}:{i}", req.command_id, 1.0, req.actor)
            assert self.state.apply(self.seq, ev.subject(), env)
            self.raws.append((self.seq, ev.subject(), encode(env)))

    def append(self, ev: Event) -> None:
        self.fold(self.request("network.list"), [ev])

    def attempt(self, name: str, **args: Any) -> Any:
        """The decision's answer, or the refusal's class (nothing folded)."""
        try:
            return self.run(name, **args).result
        except E.NetledgerError as exc:
            return type(exc)

    def restore(self) -> None:
        """The state as a restart from a snapshot of it now reads it back."""
        raw = msgpack.packb(state_to_wire(self.state))
        self.state = state_from_wire(msgpack.unpackb(raw))


op = st.one_of(
    st.tuples(
        st.just("alloc"),
        st.integers(0, 7),  # network (an index into the networks made so far)
        st.integers(0, 5),  # instance
        st.sampled_from(HOSTS),
        st.one_of(st.none(), st.integers(2, 30)),  # an explicit offset
    ),
    # (an index into the allocations made so far)
    st.tuples(st.just("dealloc"), st.integers(0, 99)),
    st.tuples(st.just("lease"), st.integers(0, 99)),
    st.tuples(st.just("release"), st.integers(0, 99)),
    st.tuples(st.just("join"), st.integers(0, 7), st.sampled_from(HOSTS)),
    st.tuples(st.just("delete"), st.integers(0, 7)),
    st.tuples(st.just("create"), st.sampled_from(["flat", "vlan"])),
    st.tuples(st.just("snapshot")),
)


def pool_ok(pool: OffsetPool, held: set[int]) -> None:
    for lst in (pool.freed, pool.ahead):
        assert lst is NO_OFFSETS or type(lst) is SortedList
    usable = {o for o in range(pool.first, pool.last + 1) if o not in pool.reserved}
    assert set(pool.iter_free()) == usable - held
    assert pool.used == len(held & usable)
    assert all(
        pool.is_free(o) == (o in usable - held) for o in range(pool.first - 1, pool.last + 2)
    )


def check(state: State) -> None:
    assert NO_OFFSETS == () and NO_JOINS == frozenset() and type(NO_JOINS) is frozenset
    for n in state.networks.values():
        assert n.joined is NO_JOINS or (type(n.joined) is set and n.joined)
        pool_ok(n.pool, {n.offset(a) for a in n.fixed})


@settings(max_examples=120)
@given(st.lists(op, max_size=40))
def test_lean_networks_fold_as_fresh_ones(ops: list[tuple[Any, ...]]) -> None:
    plain, snapped = Logged(), Logged()
    nets: list[str] = []
    made = 0

    def both(name: str, **args: Any) -> Any:
        answer = plain.attempt(name, **args)
        assert snapped.attempt(name, **args) == answer
        return answer

    def create(mode: str) -> None:
        nonlocal made
        cidr = f"10.{made // 8}.{(made % 8) * 32}.0/27"
        made += 1
        extra = {"vlan_start": 100 + made, "vni_start": 1000 + made} if mode == "vlan" else {}
        answer = both("network.create", label="n", cidr=cidr, mode=mode, **extra)
        assert isinstance(answer, dict), answer
        nets.extend(str(x["id"]) for x in answer["networks"])

    for mode in ("flat", "flat", "vlan"):
        create(mode)
    made_ips: list[tuple[str, str, str, str]] = []  # (instance, network, address, mac)
    for o in ops:
        kind = o[0]
        if kind == "alloc":
            _, ni, inst, host, offset = o
            nid = nets[ni % len(nets)]
            args: dict[str, Any] = {"network_id": nid, "host": host}
            n = plain.state.networks.get(nid)
            if offset is not None and n is not None:
                args["address"] = n.address(offset)
            answer = both("fixed_ip.allocate", instance=f"vm{inst}", **args)
            if isinstance(answer, dict):
                made_ips.append((f"vm{inst}", nid, answer["address"], answer["mac"]))
        elif kind == "dealloc" and made_ips:
            instance, nid, _, _ = made_ips[o[1] % len(made_ips)]
            both("fixed_ip.deallocate", instance=instance, network_id=nid)
        elif kind in ("lease", "release") and made_ips:
            _, _, address, mac = made_ips[o[1] % len(made_ips)]
            both(f"fixed_ip.{kind}", address=address, mac=mac)
        elif kind == "join":
            nid = nets[o[1] % len(nets)]
            if nid in plain.state.networks:
                for led in (plain, snapped):
                    led.append(NetworkHostJoined(network_id=nid, host=o[2]))
        elif kind == "delete":
            both("network.delete", network_id=nets[o[1] % len(nets)])
        elif kind == "create":
            create(o[1])
        elif kind == "snapshot":
            snapped.restore()
            assert snapped.state == plain.state
        check(plain.state)
        check(snapped.state)
    assert snapped.state == plain.state
    # The same log from its bytes, by every decoder: the same state.
    by_decode, by_fast, by_wire = State(), State(), State()
    for seq, subject, raw in plain.raws:
        assert by_decode.fold_message(seq, subject, decode(raw)) is None
        assert by_fast.fold_message(seq, subject, decode_fast(raw)) is None
        w = wire_of(raw)
        assert w is not None and by_wire.fold_wire(seq, subject, w) is None
    for s in (by_decode, by_fast, by_wire):
        check(s)
        assert s == plain.state
        for nid, n in s.networks.items():
            assert n.net == plain.state.networks[nid].net
            assert vars(n.net) == vars(plain.state.networks[nid].net)  # every field, no more


def test_the_shared_values_are_one_object_each() -> None:
    """Networks of one size share their reserved offsets; none shares a list it can change."""
    led = Logged()
    led.networks(cidr="10.0.0.0/25", mode="flat", network_size=32, num_networks=4)
    ns = list(led.state.networks.values())
    assert len({id(n.pool.reserved) for n in ns}) == 1
    led.allocate("a", network_id=ns[0].network_id, address=ns[0].address(9))  # ahead
    led.deallocate("a")  # flat: freed at once
    led.append(NetworkHostJoined(network_id=ns[1].network_id, host="h1"))
    assert ns[0].pool.ahead is not NO_OFFSETS and ns[1].joined is not NO_JOINS
    assert all(n.pool.freed is NO_OFFSETS and n.pool.ahead is NO_OFFSETS for n in ns[1:])
    assert all(n.joined is NO_JOINS for n in (ns[0], *ns[2:]))
    assert NO_OFFSETS == () and NO_JOINS == frozenset()
