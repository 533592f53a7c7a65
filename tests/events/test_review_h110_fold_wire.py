"""Review h110 of the fold's fast path (9e02226, b2e33fe, d9e4e22): ``State.fold_wire`` giving
the field-only handlers the message's struct, the wire structs untracked by the GC, a network's
id kept on its ``NetworkState``, NetworkAssociated's two subjects checked from its fields.

tests/events/test_fold_wire_fields.py holds fold_wire to fold_message over random streams of
current-version events. What it leaves out, held here:

- the logs earlier code wrote (tests/fixtures/events: v0 events upcast, NetworkAssociated on the
  legacy network subject, host events of the first executors) folded as the service's start
  folds them (:func:`_by_wire`: wire_of, else decode), message by message against fold_message;
- a snapshot taken of a fold that went through the fast path, at any point, loaded (the
  codec's whole round trip: dumps, loads) and folded on by the fast path again: the same fold
  as the envelope's of the whole log without a snapshot;
- nothing of a message's struct kept by the fold (the structs are untracked by the cyclic GC:
  one held in the fold, in a cycle, would never be collected) — and the fold packs (a struct
  in it would not).
"""

from __future__ import annotations

import base64
import gc
import types
from collections import OrderedDict
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor
from netledger.events.snapshot import digest, dumps, loads, state_to_wire
from netledger.events.state import State
from netledger.events.state_network import FixedIp
from tests.events.test_codec import load_fixture_stream
from tests.events.test_fold_wire_fields import _by_envelope, _by_wire, draw_messages

STREAM, CREATED = "NETLEDGER", "2026-12-07T00:00:00+00:00"


def _fixture_log() -> list[tuple[int, str, bytes]]:
    lines = sorted(load_fixture_stream(), key=lambda x: x["seq"])
    return [(x["seq"], x["subject"], base64.b64decode(x["payload"])) for x in lines]


def _round_trip(state: State, seq: int) -> State:
    """``state`` through a snapshot, as the service writes and loads one."""
    body = dumps(state, OrderedDict(), seq=seq, stream=STREAM, created=CREATED)
    return loads(body, sha256=digest(body), stream=STREAM, created=CREATED).state


def _structs_in(state: State) -> list[Any]:
    """The message structs reachable from ``state`` (none should be: see the module); the
    fold's own ``FixedIp`` is a struct too (untracked by the GC, f75108c), not a message's."""
    found, stack, seen = [], [state], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, msgspec.Struct) and not isinstance(obj, FixedIp):
            found.append(obj)
        # (not into modules: netaddr's IPNetwork holds its strategy module, and from there
        # the walk reached every object of the process — the executor's structs in a full run)
        if isinstance(obj, type | str | bytes | int | float | types.ModuleType):
            continue
        stack.extend(gc.get_referents(obj))
    return found


def _same(fast: State, slow: State) -> None:
    assert state_to_wire(fast) == state_to_wire(slow)
    assert fast == slow
    assert fast.host_macs == slow.host_macs


def test_the_stored_old_logs_fold_by_the_fast_path_as_by_their_envelopes() -> None:
    log = _fixture_log()
    fast, slow = State(), State()
    for seq, subject, stored in log:
        assert _by_wire(fast, seq, subject, stored) == _by_envelope(slow, seq, subject, stored)
    _same(fast, slow)
    assert not _structs_in(fast)


def test_a_snapshot_of_the_fast_fold_anywhere_in_the_old_logs_folds_on_alike() -> None:
    log = _fixture_log()
    whole = State()
    for seq, subject, stored in log:
        _by_envelope(whole, seq, subject, stored)
    for cut in range(len(log) + 1):
        fast = State()
        for seq, subject, stored in log[:cut]:
            _by_wire(fast, seq, subject, stored)
        fast = _round_trip(fast, log[cut - 1][0] if cut else 0)
        for seq, subject, stored in log[cut:]:
            if seq > fast.subject_seq.get(subject, 0):  # (as the service's _fold_raw)
                _by_wire(fast, seq, subject, stored)
        _same(fast, whole)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_snapshot_of_the_fast_fold_folds_on_as_the_whole_log_by_envelopes(
    data: st.DataObject,
) -> None:
    """Random streams (decided events and junk of every type, some cut), folded by the fast
    path with a snapshot round trip at a random point, against the envelopes' fold without."""
    actor = Actor(role="admin", user="t")
    slow = State()
    log: list[tuple[int, str, bytes]] = []
    for on, stored, _ in draw_messages(data, slow, actor):
        seq = len(log) + 1
        _by_envelope(slow, seq, on, stored)
        log.append((seq, on, stored))
    cut = data.draw(st.integers(0, len(log)), label="snapshot at")
    fast = State()
    for seq, subject, stored in log[:cut]:
        _by_wire(fast, seq, subject, stored)
    assert not _structs_in(fast)
    fast = _round_trip(fast, cut)
    for seq, subject, stored in log[cut:]:
        if seq > fast.subject_seq.get(subject, 0):
            _by_wire(fast, seq, subject, stored)
    _same(fast, slow)
    assert not _structs_in(fast)
