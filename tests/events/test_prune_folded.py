"""Review h97 of events/prune.py ``folded``: revert's "the service has seen it" check
(events/revert.py) after the fold forgot deleted networks' subjects. For every message of the
log, at every point of the command service's reading (its reader in the log's order, its own
appends folded from their acks ahead of it, forgetting as it reads: the model of
tests/events/test_prune_deleted.py), ``folded`` says whether the fold holds the message: a
revert is judged on what the service folded, and told to try again for what it has not — as
before anything was forgotten. Histories from the real deciders, with hand-made re-creations
of deleted ids."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.prune import folded
from tests.events.test_prune_deleted import Service, churned
from tests.events.test_review72_fold import needs_of, op_st
from tests.events.test_review72_fold import own_subject as _own_subject


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, max_size=40), st.data())
def test_folded_is_what_the_service_folded(ops: list[tuple[Any, ...]], data: st.DataObject) -> None:
    h, made = churned(ops, data)
    log = h.log
    own = {
        seq
        for seq, subject, _ in log
        if seq not in made and _own_subject(subject) and data.draw(st.booleans(), label=f"{seq}")
    }
    needs = {s: needs_of(h, s) for s in own}
    svc = Service(log)
    acked: set[int] = set()
    while svc.read < len(log) or own - acked:
        ready = [
            s
            for s in sorted(own - acked)
            if s <= svc.read or all(x in acked or x <= svc.read for x in needs[s])
        ]
        moves = ready + ([0] if svc.read < len(log) else [])
        pick = data.draw(st.sampled_from(moves))
        if pick == 0:
            svc.read_next()
        else:
            svc.acked(pick)
            acked.add(pick)
        for seq, subject, _ in log:
            held = seq <= svc.read or seq in acked
            assert folded(svc.state, seq, subject) == held, (seq, subject, svc.read, acked)
