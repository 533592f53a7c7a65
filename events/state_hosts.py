"""What the fold keeps of hosts: their announcements (VTEP, network-host role), their
retirements (``host retire``: events/decide_host.py), the service's pointers to announcements
stored on a host's own subject, and their executors' sighting reports (reclaim's evidence).

A mixin of :class:`~netledger.events.state.State` (its handlers, named in its dispatch table):
one idea of the fold, kept beside it as the network and floating parts are.
"""

from __future__ import annotations

from .host_events import HostAnnounced, HostInstancesChanged, HostInstancesSeen
from .ids import announce_subject, host_subject, retired_subject
from .placement_events import LegacyAnnouncementIndexed
from .reclaim_events import HostSightings
from .types import HostRetired


class HostsFold:
    """The host handlers of the fold; the fields are :class:`State`'s."""

    subject_seq: dict[str, int]
    event_time: float
    sightings: dict[str, HostSightings]
    network_hosts: set[str]
    legacy_announced: dict[str, int]
    host_macs: dict[str, dict[str, int]]

    def _host_announced(self, ev: HostAnnounced, seq: int) -> None:
        # On the host's own subject (older executors announced there)? _evolve (and fold_wire)
        # has moved the subject it came on to this message.
        legacy = self.subject_seq.get(host_subject(ev.host)) == seq
        if superseded(self, seq, host_subject(ev.host) if legacy else ev.subject(), ev):
            return
        if ev.network_host:
            self.network_hosts.add(ev.host)
        else:
            self.network_hosts.discard(ev.host)
        if legacy:
            self.legacy_announced[ev.host] = seq
        else:  # on the announcement subject, where every executor reads it
            self.legacy_announced.pop(ev.host, None)

    def retired(self, host: str) -> bool:
        """Whether ``host``'s latest retirement is newer than its latest announcement (on
        ``netledger.evt.announce.<host>``). Only an announcement brings a host back — an
        executor starts so — not a report of an executor still running there after the
        retirement (review hrev86: its own share view read its reports before the retirements
        at a restart, kept its announcement, and never announced again)."""
        return self.subject_seq.get(retired_subject(host), 0) > self.subject_seq.get(
            announce_subject(host), 0
        )

    def _host_retired(self, ev: HostRetired, seq: int) -> None:
        # What the fold knew of the host goes with it (events/decide_host.py); a retired host
        # costs the fold its subjects' sequences only. Its sighting reports stay while an
        # address is allocated there (an allocation decided beside the retirement on another
        # replica): reclaim decides on them. A share's start reads the retirements after the
        # announcements: one the host made since (it is back) is newer, and stays.
        if not self.retired(ev.host):
            return
        if not self.host_macs.get(ev.host):
            self.sightings.pop(ev.host, None)
        self.network_hosts.discard(ev.host)
        self.legacy_announced.pop(ev.host, None)

    def _announcement_indexed(self, ev: LegacyAnnouncementIndexed, seq: int) -> None:
        self.indexed(ev.host, ev.seq)

    def indexed(self, host: str, seq: int) -> None:
        """``host``'s announcement at ``seq`` is indexed (or, in an executor's view, was read
        through its index): nothing is left to index for it, unless a newer one came since."""
        if self.legacy_announced.get(host) == seq:
            del self.legacy_announced[host]

    def _instances_seen(self, ev: HostInstancesSeen, seq: int) -> None:
        if seq < self.subject_seq.get(retired_subject(ev.host), 0):
            # Older than a retirement folded already (the service folds its own appends ahead
            # of its reader: review hrev86): the log's fold dropped it with the host.
            return
        h = self.sightings.get(ev.host)
        if h is None:
            h = self.sightings[ev.host] = HostSightings()
        h.record(seq, self.event_time, ev.macs, ev.networks, ev.reason == "start")
        self._keep_sightings(ev.host, h)

    def _instances_changed(self, ev: HostInstancesChanged, seq: int) -> None:
        if seq < self.subject_seq.get(retired_subject(ev.host), 0):
            return  # (as _instances_seen)
        h = self.sightings.get(ev.host)
        if h is None or h.reports[-1].seq != ev.base_seq:
            # A gap: the report this one changes is not the newest held here (one this reader
            # did not fold, or forgot with a retirement). Its set is never guessed: the host's
            # reports are forgotten, as if it had never reported — an absence is proven from
            # its next whole report on (the executor sends one at least every FULL_EVERY), and
            # none reaches back across what was not held (docs/reclaim.md).
            self.sightings.pop(ev.host, None)
            return
        h.record_change(
            seq, self.event_time, ev.added, ev.removed, ev.networks_added, ev.networks_removed
        )
        self._keep_sightings(ev.host, h)

    def _keep_sightings(self, host: str, h: HostSightings) -> None:
        live = self.host_macs.get(host)
        if live is None:
            h.keep_newest()  # (no allocation here: only the newest report can matter)
        else:
            h.keep_only(live)


def superseded(state: HostsFold, seq: int, subject: str, ev: HostAnnounced) -> bool:
    """Whether ``ev``, at ``seq`` on ``subject``, is older than a retirement of the host folded
    already (an announcement on the host's own subject a share fetches through a pointer,
    later), or is on the host's own subject (older executors') and older than an announcement
    of the host's folded already: a share's history is read subject by subject
    (journal/follow.py), an executor's own old one after its newer one."""
    if seq < state.subject_seq.get(retired_subject(ev.host), 0):
        return True
    return subject != ev.subject() and seq < state.subject_seq.get(ev.subject(), 0)
