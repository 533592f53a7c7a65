"""Review 86: ``HostRetired`` folded ahead of the host's earlier report (events/fold_ahead.py).

The command service folds its own append of a ``HostRetired`` (an OCC-checked subject) from its
ack; the host's last report, stored just before it (an executor stopped for the retirement
writes one as it goes), may still be on its way to the reader. The retirement drops the host's
sightings at once — a change across subjects that fold_ahead does not hold back — and the report
folded after it brings them back. The log's fold (report, then retirement) has none: the
service's fold, and its snapshots (``verify --snapshots``), are not the log's, and the retired
host's reports stay in its memory for good.
"""

from __future__ import annotations

from netledger.events.host_events import HostAnnounced, HostInstancesSeen
from netledger.events.state import State
from tests.events.test_fold_ahead import Service, normal, world


def test_a_retirement_folded_before_the_report_it_follows_drops_the_sightings() -> None:
    h = world()
    h.add(HostAnnounced("h1", "192.0.2.1", "eth1", None, False))
    h.add(HostInstancesSeen(host="h1", macs=[], networks=["1"], reason="start"))
    assert h.run("host.retire", host="h1") == {"retired": "h1"}
    last = len(h.log)
    assert "h1" not in h.state.sightings  # the log's fold dropped them

    svc = Service(h.log, hold=True)
    while svc.read < last - 2:  # the reader has not got the report yet
        svc.read_next()
    svc.acked(last)  # the retirement, from its ack
    while svc.read < last:
        svc.read_next()
    state: State = svc.state
    assert not state.held
    assert normal(state) == normal(h.state)
