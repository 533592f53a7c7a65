"""What the fold keeps of a network nobody allocates in: a host's view holds every network of
the cloud and serves ~10 (bench/RESULTS.md "fleet": ~17 MB a view at 5,000 networks). Its
``NetworkCreated`` is kept compact (events/wire_fast.py ``compact``) whichever way it was
decoded, equal to it, and it shares the empty ``joined`` of every network no host joined;
bytes are counted by tracemalloc (deterministic, not timed)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import msgpack
import pytest

from netledger.events.codec import Actor, Envelope, decode, encode
from netledger.events.ids import REGISTRY_SUBJECT, placement_subject
from netledger.events.placement_events import NetworkHostJoined
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.state_network import NO_JOINS
from netledger.events.types import NetworkCreated
from netledger.events.wire_fast import decode_fast, wire_of

N = 200
ADMIN = Actor(role="admin", user="ops")


def created(i: int) -> NetworkCreated:
    a = f"10.{i // 4}.0"
    o = (i % 4) * 64
    return NetworkCreated(
        network_id=str(i + 1), label=f"net{i}", cidr=f"{a}.{o}/26", netmask="255.255.255.192",
        gateway=f"{a}.{o + 1}", broadcast=f"{a}.{o + 63}", dhcp_start=f"{a}.{o + 2}",
        mode="vxlan", vlan=None, vni=1000 + i, bridge=f"brvx{1000 + i}", bridge_interface=None,
        dns1=None, dns2=None, vpn_private_address=None, vpn_public_port=None, project=None,
        multi_host=True, network_host=None, mtu=None, cidr_v6=None,
    )  # fmt: skip


RAWS = [encode(Envelope(created(i), f"e{i}", "c", 1.0, ADMIN)) for i in range(N)]


def fold_decoded(s: State) -> None:  # as a view's follower decodes (journal/follow.py)
    for i, raw in enumerate(RAWS):
        assert s.fold_message(i + 1, REGISTRY_SUBJECT, decode_fast(raw)) is None


def fold_codec(s: State) -> None:  # as replay decodes
    for i, raw in enumerate(RAWS):
        assert s.fold_message(i + 1, REGISTRY_SUBJECT, decode(raw)) is None


def fold_wires(s: State) -> None:  # as the command service folds (State.fold_wire)
    for i, raw in enumerate(RAWS):
        assert s.fold_wire(i + 1, REGISTRY_SUBJECT, wire_of(raw)) is None


def kept_by(fold: Callable[[State], None]) -> tuple[State, int]:
    """The state folded and the bytes it holds (what the fold allocated and did not free)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        s = State()
        fold(s)
        return s, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def fold_built(s: State) -> None:  # events built by __init__: their values share their keys
    for i in range(N):
        env = Envelope(created(i), f"e{i}", "c", 1.0, ADMIN)
        assert s.fold_message(i + 1, REGISTRY_SUBJECT, env) is None


@pytest.mark.parametrize("fold", [fold_decoded, fold_codec, fold_wires])
def test_a_folded_network_keeps_its_created_event_compact(fold: Callable[[State], None]) -> None:
    fold(State())  # the decoders' first use builds their types: not what a network holds
    s, held = kept_by(fold)
    assert [s.networks[str(i + 1)].net for i in range(N)] == [created(i) for i in range(N)]
    built, held_built = kept_by(fold_built)
    assert built == s
    # As little as the fold of events built by __init__ (~120 bytes a network apart: the
    # same strings, decoded or formatted); the decoders' fast path sets an event's __dict__
    # whole, ~540 bytes more a network when kept as it is.
    assert held <= held_built + 200 * N
    # A snapshot's networks are kept alike (read from its bytes: msgpack builds each map)
    raw = msgpack.packb(state_to_wire(s))
    again, held_again = kept_by(
        lambda t: t.__dict__.update(vars(state_from_wire(msgpack.unpackb(raw))))
    )
    assert again == s
    assert held_again <= held_built + 200 * N


def test_a_network_no_host_joined_shares_the_empty_joined() -> None:
    """``joined`` is the shared, immutable ``NO_JOINS`` until a host joins: the join gives the
    network a set of its own; the others, and the shared one, stay as they were."""
    s = State()
    fold_decoded(s)
    assert all(n.joined is NO_JOINS for n in s.networks.values())
    for seq, host in ((N + 1, "host-a"), (N + 2, "host-b"), (N + 3, "host-a")):
        env = Envelope(NetworkHostJoined(network_id="3", host=host), f"j{seq}", "c", 2.0, ADMIN)
        assert s.fold_message(seq, placement_subject(host), env) is None
    assert s.networks["3"].joined == {"host-a", "host-b"}
    assert s.networks["3"].joined is not NO_JOINS
    assert NO_JOINS == set() and s.networks["4"].joined is NO_JOINS
    again = state_from_wire(msgpack.unpackb(msgpack.packb(state_to_wire(s))))
    assert again == s and again.networks["4"].joined is NO_JOINS
    assert again.networks["3"].joined == {"host-a", "host-b"}
