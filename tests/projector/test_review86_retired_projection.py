"""Review 86: the projection and the fold disagree on whether a retired host is back.

The fold (``State.retired``, the decider's ``host_present``) and ``status`` take any message
of the host's executor after its retirement — a report on ``netledger.evt.host.<host>`` — for
the host being back; the projection clears ``hosts.retired_seq`` only on an announcement
(projector/project_hosts.py). A retired host whose executor still wrote a report: retired in
the projection, in the cloud for the fold. Whichever is meant, the readers must agree.
"""

from __future__ import annotations

from netledger.events.codec import Actor
from netledger.events.host_events import HostAnnounced, HostReconciled
from netledger.events.state import State
from netledger.events.types import HostRetired
from tests.projector.test_projector_unit import Feeder

ADMIN = Actor(role="admin", user="ops")


def test_projection_and_fold_agree_on_a_retired_host_that_reported_since() -> None:
    f = Feeder()
    f(HostAnnounced("h1", "192.0.2.1", "eth1", "eth0", False))
    f(HostRetired("h1"), actor=ADMIN)
    f(HostReconciled(host="h1", applied_seq=2, changes=1, drift_repairs=0, duration_ms=1.0))
    assert not f.store.rejected
    state = State()
    for seq, subject, env in f.log:
        assert state.fold_message(seq, subject, env) is None
    row = f.rows("hosts")[("h1",)]
    assert (row["retired_seq"] is not None) == state.retired("h1"), (row, state.retired("h1"))
