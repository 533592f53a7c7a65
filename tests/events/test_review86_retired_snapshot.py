"""Review 86: ``HostRetired`` changed the fold without a new ``FOLD_VERSION``.

netledger from before ``host retire`` (4fe75d4: fold version 12, snapshot format 7, as now)
cannot decode a ``HostRetired`` and folds it as undecodable (its subject's sequence moves past
it, nothing else): the retired host stays a network host, its sightings and a pending legacy
pointer stay. Its snapshots — a replica not yet upgraded, during a rolling upgrade; an
executor's view snapshot, which holds its HostBook beside the same fold — say fold version 12,
and this code takes them as its own fold: it starts from a state where the host never left,
and never folds the retirement again (``subject_seq`` is past it). The revert's
``NetworkReassociated`` was made so that "a fold that skipped it as undecodable holds the same
state, and its snapshots stay good"; this one is not.
"""

from __future__ import annotations

import msgpack

from netledger.events.host_events import HostAnnounced, HostInstancesSeen
from netledger.events.snapshot import SnapshotInvalid, digest, dumps, loads
from netledger.events.state import State
from netledger.events.types import HostRetired
from tests.events.test_fold_ahead import normal, world

#: the fold version netledger wrote before HostRetired existed (git show 4fe75d4:events/state.py)
FOLD_BEFORE_HOST_RETIRE = 12


def test_a_snapshot_by_netledger_before_host_retire_is_not_taken_as_this_fold() -> None:
    h = world()
    h.add(HostAnnounced("h1", "192.0.2.1", "eth1", None, True))
    h.add(HostInstancesSeen(host="h1", macs=[], networks=["1"], reason="start"))
    assert h.run("host.retire", host="h1") == {"retired": "h1"}
    assert "h1" not in h.state.network_hosts and "h1" not in h.state.sightings

    old = State()  # what a reader from before HostRetired folds: the message is undecodable
    for seq, subject, env in h.log:
        undecodable = isinstance(env.event, HostRetired)
        why = old.fold_message(seq, subject, None if undecodable else env, "unknown type")
        assert (why is not None) == undecodable
    assert "h1" in old.network_hosts  # its fold: the host never left

    w = msgpack.unpackb(
        dumps(old, None, seq=len(h.log), stream="NETLEDGER", created="c"),
        raw=False,
        strict_map_key=False,
    )
    w["fold"] = FOLD_BEFORE_HOST_RETIRE  # (this code's dumps writes its own version)
    body = msgpack.packb(w, use_bin_type=True)
    try:
        snap = loads(body, sha256=digest(body), stream="NETLEDGER", created="c")
    except SnapshotInvalid:
        return  # refused: the reader folds the log instead
    assert normal(snap.state) == normal(h.state)
