"""The sightings reporter sends what changed (``HostInstancesChanged``) only when its own fold
of the log holds the report it is relative to — a whole set (``HostInstancesSeen``) at a start,
after an append whose stored sequence it does not know, when the change is not smaller than
the set, and every ``FULL_EVERY`` reports — and the log's fold of what it sent is the set it saw.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.host_events import FULL_EVERY, HostInstancesChanged, HostInstancesSeen
from netledger.events.state import State
from netledger.executor.sightings import Sighting, SightingReporter

MACS = [f"02:16:3e:00:00:{i:02x}" for i in range(40)]


class Host:
    """A reporter whose ``_publish`` stores into a list and folds what it stored into the
    executor's state (what the follower does before an append returns: read_back_own)."""

    def __init__(self, changes: bool = True) -> None:
        self.state = State()
        self.seq = 0
        self.sent: list[Any] = []
        #: the sequence the next append returns instead of its own (a retry over a lost ack)
        self.lie: int | None = None
        self.views: list[Sighting] = []

        async def publish(events: list[Any]) -> int:
            for ev in events:
                self.seq += 1
                env = Envelope(ev, f"e{self.seq}", f"c{self.seq}", float(self.seq), SYSTEM)
                assert self.state.apply(self.seq, ev.subject(), env)
                self.sent.append(ev)
            if self.lie is not None:
                self.seq += 1  # something else was stored after it
                got, self.lie = self.lie, None
                return got
            return self.seq

        ex = SimpleNamespace(
            cfg=SimpleNamespace(host="h1"),
            state=self.state,
            _publish=publish,
            opts=SimpleNamespace(netns=None, sighting_changes=changes),
        )
        r = SightingReporter.__new__(SightingReporter)
        r.__dict__.update(
            ex=ex, poll=0.01, heartbeat=1e9, last=None, last_at=0.0, reports=0, report_seq=0,
            heartbeats=0, since=0.0, broken=False, _kv=None, _kv_missing_logged=False,
            kernel=SimpleNamespace(close=lambda: None),
        )  # fmt: skip
        r.observe = lambda bridges: self.views.pop(0)  # type: ignore[method-assign]
        r._bridges = lambda: {}  # type: ignore[method-assign]
        self.r = r

    async def see(self, macs: list[str], nets: tuple[str, ...] = ("1",)) -> Any:
        self.views.append(Sighting(frozenset(macs), frozenset(nets), 0))
        assert await self.r.report_once()
        folded = self.state.sightings["h1"]
        assert folded.last_macs == set(macs) and folded.reports[-1].networks == set(nets)
        return self.sent[-1]


async def test_changes_after_a_whole_set_and_a_whole_set_every_full_every() -> None:
    h = Host()
    first = await h.see(MACS[:20])
    assert isinstance(first, HostInstancesSeen) and first.reason == "start"
    ch = await h.see(MACS[:21], ("1", "2"))
    assert isinstance(ch, HostInstancesChanged)
    assert (ch.base_seq, ch.added, ch.removed) == (1, [MACS[20]], [])
    assert (ch.networks_added, ch.networks_removed) == (["2"], [])
    kinds = []
    for k in range(2 * FULL_EVERY):
        ev = await h.see(MACS[: 20 + k % 2])
        kinds.append(type(ev))
    fulls = [i for i, t in enumerate(kinds) if t is HostInstancesSeen]
    # one whole set in every FULL_EVERY reports (the first was whole, the second a change)
    assert fulls == [FULL_EVERY - 2, 2 * FULL_EVERY - 2]
    assert all(e.reason == "change" for e in h.sent[1:] if isinstance(e, HostInstancesSeen))


async def test_a_whole_set_after_an_append_whose_sequence_is_not_the_reports() -> None:
    h = Host()
    await h.see(MACS[:20])
    h.lie = 99  # the log's last sequence after a retry, not the report's
    assert isinstance(await h.see(MACS[:21]), HostInstancesChanged)
    assert isinstance(await h.see(MACS[:20]), HostInstancesSeen)  # its base is not known
    assert isinstance(await h.see(MACS[:21]), HostInstancesChanged)


async def test_a_whole_set_when_the_change_is_not_smaller() -> None:
    h = Host()
    await h.see(MACS[:2])
    assert isinstance(await h.see(MACS[2:4]), HostInstancesSeen)  # 4 changes, 2 MACs
    assert isinstance(await h.see(MACS[2:5]), HostInstancesChanged)


async def test_a_whole_set_when_the_fold_holds_another_report() -> None:
    """Another report on the host's subject since ours (another executor of the same name):
    the fold's newest is not ours — a change relative to ours would be a gap."""
    h = Host()
    await h.see(MACS[:20])
    h.seq += 1
    other = HostInstancesSeen(host="h1", macs=MACS[:3], networks=["1"], reason="start")
    h.state.apply(h.seq, other.subject(), Envelope(other, "x", "x", 0.0, SYSTEM))
    assert isinstance(await h.see(MACS[:21]), HostInstancesSeen)


async def test_whole_sets_only_when_asked() -> None:
    """``executor run --whole-sightings`` (command services older than the changes still
    running): every report is the whole set, each a change's reason."""
    h = Host(changes=False)
    sent = [await h.see(MACS[: 20 + k % 3]) for k in range(6)]
    assert all(isinstance(e, HostInstancesSeen) for e in sent)
    assert [e.reason for e in sent] == ["start"] + ["change"] * 5


async def test_a_whole_set_at_the_heartbeat_once_the_fold_forgot_the_host() -> None:
    """A change whose base the fold did not hold (one stored twice) makes every reader forget
    the host; a quiet host would not report again for long, and no heartbeat confirms a report
    the fold no longer holds: at the next heartbeat due, the whole set goes to the log."""
    h = Host()
    await h.see(MACS[:20])
    await h.see(MACS[:21])
    del h.state.sightings["h1"]  # what the fold does on a gap (events/state_hosts.py)
    h.r.heartbeat = 0.0  # due now
    ev = await h.see(MACS[:21])
    assert isinstance(ev, HostInstancesSeen) and ev.macs == MACS[:21] and ev.reason == "change"
    h.r.heartbeat = 1e9
    assert isinstance(await h.see(MACS[:22]), HostInstancesChanged)  # changes again after it
