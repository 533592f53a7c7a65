"""Review h110 of the whole set an executor sends at a heartbeat once its own fold forgot its
host (38c68e8): forgotten the way the fold forgets — a change stored twice, whose second copy's
base is not the newest report (events/state_hosts.py) — the next heartbeat due sends the whole
set once; from then on the heartbeats go to the liveness bucket (a real nats-server's), confirm
that set as the fold holds it, and append nothing more; a host forgotten again sends it again.
"""

from __future__ import annotations

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.host_events import HostInstancesChanged, HostInstancesSeen
from netledger.events.reclaim_events import Heartbeat
from netledger.executor.sightings import Sighting
from netledger.journal.liveness import heartbeat_from_json, live_bucket, seen_key
from netledger.journal.stream import Connection
from tests.executor.test_sightings_changes import MACS, Host


def _store_again(h: Host, ev: HostInstancesChanged) -> None:
    """``ev`` stored once more (an append retried over a lost ack, under another id)."""
    h.seq += 1
    env = Envelope(ev, f"e{h.seq}", f"c{h.seq}", float(h.seq), SYSTEM)
    assert h.state.apply(h.seq, ev.subject(), env)


async def _beat(h: Host, macs: list[str]) -> bool:
    h.views.append(Sighting(frozenset(macs), frozenset({"1"}), 0))
    return await h.r.report_once()


async def _heartbeat_held(conn: Connection) -> Heartbeat | None:
    kv = await live_bucket(conn)
    entry = await kv.get(seen_key("h1"))
    return heartbeat_from_json(entry.value, entry.revision)


async def test_a_forgotten_host_sends_its_whole_set_once_then_heartbeats(
    conn: Connection,
) -> None:
    await live_bucket(conn, create=True)
    h = Host()
    h.r.ex.conn = conn
    await h.see(MACS[:20])
    change = await h.see(MACS[:21])
    assert isinstance(change, HostInstancesChanged)
    for twice in (change, None):  # forgotten, sent again; forgotten once more, sent again
        _store_again(h, twice or _changed(h))
        assert "h1" not in h.state.sightings
        h.r.heartbeat = 0.0  # every poll is due
        sent = len(h.sent)
        assert await _beat(h, MACS[:21])
        assert len(h.sent) == sent + 1
        whole = h.sent[-1]
        assert isinstance(whole, HostInstancesSeen) and whole.macs == sorted(MACS[:21])
        assert h.state.sightings["h1"].last_seq == h.seq
        for _ in range(3):
            assert not await _beat(h, MACS[:21])
            assert len(h.sent) == sent + 1  # heartbeats: nothing appended
            hb = await _heartbeat_held(conn)
            assert hb is not None and hb.report_seq == h.seq
            assert h.state.sightings["h1"].confirms(hb)
        assert h.r.heartbeats >= 3
        h.r.heartbeat = 1e9


def _changed(h: Host) -> HostInstancesChanged:
    """A change on the host's newest report (what the next loop stores twice)."""
    ev = HostInstancesChanged(
        host="h1", base_seq=h.seq, added=[MACS[21]], removed=[], networks_added=[],
        networks_removed=[], leases=0,
    )  # fmt: skip
    _store_again(h, ev)  # (stored once: the fold applies it)
    assert h.state.sightings["h1"].last_seq == h.seq
    h.r.report_seq = h.seq
    return ev
