"""Snapshots of the fold, pure: a snapshot + the tail equals the fold of the whole log.

Driven by the real deciders (random commands, as the projection's property tests do) plus
random host events (sightings, announcements), cut at a random sequence: the state decoded from
the snapshot, with the rest of the log folded on top, equals the state folded from sequence 1.
Every way a snapshot can be unusable is refused with a reason, never trusted.
"""

from __future__ import annotations

from collections import OrderedDict

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope, decode, encode
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.host_events import HostAnnounced, HostInstancesSeen
from netledger.events.ids import host_subject
from netledger.events.placement import companions, legacy_indexes
from netledger.events.snapshot import (
    SNAPSHOT_FORMAT,
    SnapshotInvalid,
    digest,
    dumps,
    loads,
    seen_events,
    state_from_wire,
    state_to_wire,
)
from netledger.events.state import FOLD_VERSION, State
from tests.projector.test_projector_props import command

STREAM, CREATED = "NETLEDGER", "2026-12-04T00:00:00+00:00"
HOSTS = ["c1", "c2"]
MACS = [f"fa:16:3e:00:00:0{i}" for i in range(4)]


def _log(data: st.DataObject, steps: int) -> list[tuple[int, str, Envelope]]:
    """Events as the service would append them (deciders), with host reports in between."""
    state = State()
    log: list[tuple[int, str, Envelope]] = []

    def append(ev: object, cid: str, j: int = 0, subject: str | None = None) -> None:
        seq = len(log) + 1
        env = Envelope(ev, f"{cid}:{j}", cid, float(seq), Actor(role="admin", user="t"))  # type: ignore[arg-type]
        subject = subject or env.event.subject()
        state.apply(seq, subject, env)
        log.append((seq, subject, env))

    for i in range(steps):
        kind = data.draw(st.sampled_from(["cmd", "cmd", "cmd", "seen", "announce", "index"]))
        if kind == "index":  # the service's pointers to announcements on host subjects
            for j, ev in enumerate(legacy_indexes(state)):
                append(ev, f"x{i}", j)
            continue
        if kind == "seen":
            host = data.draw(st.sampled_from(HOSTS))
            macs = data.draw(st.lists(st.sampled_from(MACS), unique=True, max_size=3))
            nets = data.draw(st.lists(st.sampled_from(["1", "2", "3"]), unique=True, max_size=2))
            append(HostInstancesSeen(host=host, macs=macs, networks=nets, reason="change"), f"s{i}")
            continue
        if kind == "announce":
            host = data.draw(st.sampled_from(HOSTS))
            append(
                HostAnnounced(
                    host=host,
                    vtep_address="192.0.2.1",
                    physical_interface="eth0",
                    public_interface=None,
                    network_host=data.draw(st.booleans()),
                ),
                f"a{i}",
                # as executors from before the announcement subjects did: on the host's own
                subject=host_subject(host) if data.draw(st.booleans()) else None,
            )
            continue
        name, args = data.draw(command(state))
        req = parse_command(
            name, {"command_id": f"c{i}", "args": args, "actor": {"role": "admin", "user": "t"}}
        )
        try:
            decision = decide(state, req)
        except NetledgerError:
            continue
        # ...with the joins the service adds to the same batch (events/placement.py)
        events = [*decision.events, *companions(state, decision.events, set())]
        for j, ev in enumerate(events):
            append(ev, f"c{i}", j)
    return log


def _fold(log: list[tuple[int, str, Envelope]], state: State | None = None) -> State:
    state = state or State()
    for seq, subject, env in log:
        state.apply(seq, subject, env)
    return state


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_snapshot_plus_tail_equals_the_whole_fold(data: st.DataObject) -> None:
    log = _log(data, 50)
    cut = data.draw(st.integers(0, len(log)))
    head = _fold(log[:cut])
    # The wire form is msgpack-clean and round-trips exactly.
    assert state_from_wire(msgpack.unpackb(msgpack.packb(state_to_wire(head)))) == head
    seen: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()
    for _, _, env in log[:cut]:  # the service remembers commands as their stored envelopes
        seen[env.command_id] = (*seen.get(env.command_id, ()), encode(env))
    body = dumps(head, seen, seq=cut, stream=STREAM, created=CREATED)
    snap = loads(
        body, sha256=digest(body), stream=STREAM, created=CREATED, stream_last_seq=len(log)
    )
    assert snap.seq == cut
    assert snap.state == head
    assert snap.seen == seen
    for cid, raws in seen.items():
        assert seen_events(snap.seen[cid]) == [decode(r).event for r in raws]
    assert _fold(log[cut:], snap.state) == _fold(log)


def _body(**over: object) -> bytes:
    w = {
        "format": SNAPSHOT_FORMAT,
        "fold": FOLD_VERSION,
        "stream": STREAM,
        "created": CREATED,
        "seq": 0,
        "state": state_to_wire(State()),
        "seen": [],
    }
    w.update(over)
    return msgpack.packb(w)


@pytest.mark.parametrize(
    ("body", "sha", "why"),
    [
        (_body(), "0" * 64, "content hash mismatch"),
        (_body()[:-5], None, "content hash"),
        (b"\xc1garbage", "", "not msgpack"),
        (_body(format=99), "", "format 99"),
        (_body(fold=1), "", "fold version 1"),
        (_body(stream="OTHER"), "", "taken of stream OTHER"),
        (_body(created="2020-01-01T00:00:00+00:00"), "", "taken of stream"),
        (_body(seq=10), "", "beyond the stream's last sequence 5"),
        (_body(state={"networks": 3}), "", "undecodable state"),
    ],
)
def test_unusable_snapshots_are_refused_with_a_reason(
    body: bytes, sha: str | None, why: str
) -> None:
    if sha == "":
        sha = digest(body)
    with pytest.raises(SnapshotInvalid) as e:
        loads(body, sha256=sha, stream=STREAM, created=CREATED, stream_last_seq=5)
    assert why in e.value.reason


def test_an_instances_addresses_load_as_the_fold_keeps_them() -> None:
    """The fold keeps an instance's (network, address) pairs as a sorted tuple without repeats
    and drops an instance that holds none; a snapshot (older ones wrote sorted lists) loads
    the same way, whatever order or repeats it holds."""
    wire = state_to_wire(State())
    wire["instance_ips"] = {
        "vm-1": [["2", "10.0.1.2"], ["1", "10.0.0.2"], ["2", "10.0.1.2"]],
        "vm-2": [["1", "10.0.0.3"]],
        "vm-3": [],
    }
    state = state_from_wire(wire)
    assert state.instance_ips == {
        "vm-1": (("1", "10.0.0.2"), ("2", "10.0.1.2")),
        "vm-2": (("1", "10.0.0.3"),),
    }
