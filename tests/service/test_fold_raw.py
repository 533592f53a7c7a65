"""The start's catch-up folds each stored message without an envelope (``_fold_raw``:
``wire_of``, ``State.fold_wire``) exactly as the follower's path does (``decode_fast``, then
``_fold``): the same state to the byte of a snapshot, the same messages refused for the same
reasons, the same commands remembered for retries.

Two readers of one log, compared: a generated cloud's history (bench/history_gen.py) with
messages no writer of this code writes mixed in — another host's subject, a cut message, a
field of the wrong type, an older version, an extra envelope field, actors decode refuses or
reads its own way, an unknown type, an event the fold cannot take, a sequence already folded —
and random streams of decided commands and junk of the right types on any subject
(hypothesis, the strategies of tests/events/test_fold_projector_agree.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import DecodeError, NetledgerError
from netledger.events.host_events import HostReconciled
from netledger.events.ids import announce_subject, host_subject
from netledger.events.snapshot import state_to_wire
from netledger.events.wire_fast import decode_fast, wire_of
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.events.test_fold_projector_agree import _subject_of, junk
from tests.poison import stored_network_created
from tests.projector.test_projector_props import command

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "bench"))

from history_gen import Cloud

Log = list[tuple[int, str, bytes]]


def _service() -> CommandService:
    """A service never started: only its fold is used (as bench/fold_cpu.py does)."""
    return CommandService(
        None,  # type: ignore[arg-type]
        snapshots=SnapshotPolicy(),
        reap_interval=None,
        child_catch_up=None,
    )


def _outcome(svc: CommandService) -> tuple[Any, ...]:
    assert svc.snapshotter is not None
    return (
        msgpack.packb(state_to_wire(svc.state)),
        list(svc.rejected),
        svc.rejected_total,
        list(svc.seen.items()),
        svc.snapshotter.since,
    )


def _both(log: Log) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(the catch-up's fold of ``log``, the follower's)."""
    fast, slow = _service(), _service()
    for seq, subject, data in log:
        fast._fold_raw(seq, subject, data)
        try:
            env, err = decode_fast(data), None
        except DecodeError as exc:
            env, err = None, exc
        slow._take(seq, subject, env, err, data)
    return _outcome(fast), _outcome(slow)


def _changed(data: bytes, **changes: Any) -> bytes:
    obj = msgpack.unpackb(data)
    obj.update(changes)
    return bytes(msgpack.packb(obj))


def _odd(subject: str, data: bytes) -> list[tuple[str, bytes]]:
    """Messages no writer of this code stores, made from one it did."""
    obj = msgpack.unpackb(data)
    host = obj["data"].get("host") if isinstance(obj["data"].get("host"), str) else "x"
    wrong_type = msgpack.unpackb(data)
    wrong_type["data"][next(iter(wrong_type["data"]))] = 1.5
    return [
        (host_subject("other"), data),  # another host's subject (or not the event's)
        (announce_subject(host), data),
        (subject, data[:-3]),  # cut
        (subject, bytes(msgpack.packb(wrong_type))),
        (subject, _changed(data, version=0)),  # older (an upcaster, or none)
        (subject, _changed(data, extra=1)),  # eight envelope fields: decode reads it
        (subject, _changed(data, actor={"role": 5})),  # decode takes it, its own way
        (subject, _changed(data, actor="nobody")),
        (subject, _changed(data, actor={"project": b"p"})),
        (subject, _changed(data, actor={1: "x"})),  # decode refuses it: not msgpack it takes
        (subject, _changed(data, type="NoSuchEvent")),
        (subject, _changed(data, command_id="")),
        (subject, b"\x87junk"),
    ]


async def test_a_generated_history_folds_alike_by_either_path() -> None:
    stored: list[tuple[str, bytes]] = []
    cloud = Cloud(hosts=12, networks=40, seed=5)
    cloud.sink = lambda batch: stored.extend((s, d) for s, d, _ in batch)
    await cloud.build(None, 3000)
    clean = [(seq, s, d) for seq, (s, d) in enumerate(stored, start=1)]
    fast, slow = _both(clean)
    assert fast == slow
    assert fast[0] == msgpack.packb(state_to_wire(cloud.state))
    assert fast[2] == 0

    mixed: Log = []
    for i, (subject, data) in enumerate(stored):
        mixed.append((len(mixed) + 1, subject, data))
        if i % 97 == 3:
            mixed += [(len(mixed) + 1 + k, s, d) for k, (s, d) in enumerate(_odd(subject, data))]
            mixed.append((len(mixed), subject, data))  # a sequence already folded
    mixed.append((len(mixed) + 1, "netledger.evt.registry", stored_network_created(cidr="abc")))
    mixed.append((len(mixed) + 1, "netledger.evt.registry", stored_network_created(vni=True)))
    fast, slow = _both(mixed)
    assert fast == slow
    assert fast[2] > 0
    reasons = [r.reason for r in fast[1]]
    assert any("does not belong on netledger.evt.host.other" in r for r in reasons)
    assert any("cannot be folded" in r for r in reasons)  # Unfoldable
    # a cut message, b"\x87junk", an actor with an int key: per message made odd
    odd = sum(1 for i in range(len(stored)) if i % 97 == 3)
    assert sum("not msgpack" in r for r in reasons) == 3 * odd


def test_the_host_reports_the_fold_only_counts_take_no_event() -> None:
    """A report the fold only counts (no handler) moves its subject's sequence, the fold's
    last sequence and its time, and nothing else; on another host's subject it is refused."""
    ev = HostReconciled(host="h1", applied_seq=5, changes=0, drift_repairs=0, duration_ms=1.5)
    data = encode(Envelope(ev, "p:0", "p", 7.0, Actor(role="executor", user="h1")))
    assert wire_of(data) is not None
    svc = _service()
    svc._fold_raw(3, host_subject("h1"), data)
    svc._fold_raw(4, host_subject("h2"), data)
    assert svc.state.subject_seq == {host_subject("h1"): 3, host_subject("h2"): 4}
    assert (svc.state.last_seq, svc.state.event_time) == (4, 7.0)
    assert [(r.seq, r.reason) for r in svc.rejected] == [
        (4, f"HostReconciled does not belong on {host_subject('h2')}")
    ]
    assert not svc.seen  # an executor's pass id is no command


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_streams_fold_alike_by_either_path(data: st.DataObject) -> None:
    """Decided commands and junk of the right types, on their subjects or others, sometimes
    cut: whatever a stream holds, both paths fold it alike."""
    ref = _service()  # the state the strategies draw from (the follower's path)
    log: Log = []
    actor = Actor(role="admin", user="t")
    for i in range(data.draw(st.integers(1, 30), label="steps")):
        if data.draw(st.integers(0, 9)) < 6:
            name, args = data.draw(command(ref.state))
            req = parse_command(
                name, {"command_id": f"c{i}", "args": args, "actor": actor.to_wire()}
            )
            try:
                events: list[tuple[str | None, Any]] = [
                    (None, ev) for ev in decide(ref.state, req).events
                ]
            except NetledgerError:
                continue
            except Exception:  # a decider on junk both folds took (as in the projector test)
                continue
        else:
            events = [data.draw(junk(ref.state))]
        for j, (subject, ev) in enumerate(events):
            stored = encode(Envelope(ev, f"c{i}:{j}", f"c{i}", float(i), actor))
            if data.draw(st.integers(0, 19)) == 0:
                stored = stored[: data.draw(st.integers(0, len(stored) - 1))]
            entry = (len(log) + 1, subject or _subject_of(ev), stored)
            log.append(entry)
            try:
                env, err = decode_fast(stored), None
            except DecodeError as exc:
                env, err = None, exc
            ref._take(*entry[:2], env, err, stored)
    fast, slow = _both(log)
    assert fast == slow
    assert slow == _outcome(ref)
