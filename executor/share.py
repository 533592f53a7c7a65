"""What of the log can change this host: its *share*. Pure (the follower does the reading).

An executor does not follow the whole stream (that is every other host's reports and every
network's allocations: the cloud's read work would grow with hosts²). It follows, like OVN's
ovn-controller monitoring only the datapaths local to its chassis:

* the registry (networks and pools: which networks exist, who serves them),
* every host's announcement (``netledger.evt.announce.>``: VTEPs, network hosts), and the
  service's pointers to those stored before that subject existed, on the host's own subject
  (``netledger.evt.legacy-announcements``: the view fetches each message pointed at, once),
  and every host's retirement (``netledger.evt.retired.>``: its VTEP and role end),
* its own host subject (what it did) and its placement subject (``NetworkHostJoined``: the
  service records there when this host gets its first instance in a network),
* the subjects of the networks it needs: where it holds an allocated address (or, multi-host,
  one deallocated but held for its DHCP release: it serves it until then), where it is the
  ``network_host``, and — a host run with ``--network-host`` — the networks it may serve (not
  multi-host, naming no host). A network's subject also carries its floating IPs' NAT mappings
  (``FloatingIpMapped``), so no pool's history is read.

The network set is recomputed from the fold after every change (:func:`networks_needed`). A
network that becomes needed is read from where the fold left it (its subject's last folded
sequence) up to the point reached, then followed with the rest; a network no longer needed is
dropped (its folded state stays; a later join reads it on from there).

**One subject per network, or every network.** A host needing a large part of the live
networks follows ``netledger.evt.network.>`` instead (:func:`follow_every`): it then reads at
most twice its networks' events, and its consumer has no thousands of filters to recreate.
Measured on a 1 M-event log of 5,000 networks (bench/share_filters.py, nats-server 2.15.1):
creating a consumer costs the server ~N² in its N filter subjects (16: ~1 ms, 200: ~6 ms,
1,000: ~85 ms, 2,000: ~350 ms; updating the filters of a named consumer in place costs the
same), while following every network makes the host read every network's events (5,000 /
N times its own). So: every network from half of the live networks on (and at least
:data:`EVERY_MIN_NETWORKS`), back to one subject each below three eighths (hysteresis: a host
near the line does not switch back and forth at every join).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from netledger.events.ids import (
    ANNOUNCEMENTS,
    EVENT_PREFIX,
    LEGACY_ANNOUNCEMENTS,
    REGISTRY_SUBJECT,
    RETIRED_HOSTS,
    host_subject,
    network_subject,
    placement_subject,
)
from netledger.events.prune import read_from
from netledger.events.state import NetworkState, State

from .fragments import holds

ALL_NETWORKS = f"{EVENT_PREFIX}.network.>"

#: Follow every network from this share of the live networks on ...
EVERY_FROM = 0.5
#: ... and one subject each again below this share (hysteresis).
EVERY_UNTIL = 0.375
#: Below this many networks a host never follows every network: a few filters cost nothing.
EVERY_MIN_NETWORKS = 64


def follow_every(needed: int, live: int, now: bool) -> bool:
    """Whether a host needing ``needed`` of the ``live`` networks follows every network,
    given whether it does ``now`` (hysteresis: switched on at :data:`EVERY_FROM` of the live
    networks, off below :data:`EVERY_UNTIL`; never below the minimum, half of it once on)."""
    if now:
        return needed >= max(1, EVERY_MIN_NETWORKS // 2) and needed >= EVERY_UNTIL * live
    return needed >= max(1, EVERY_MIN_NETWORKS) and needed >= EVERY_FROM * live


def served_by_network_hosts(n: NetworkState) -> bool:
    """A network the hosts run with ``--network-host`` serve (once in use): one of a single
    host that names none (events/state.py ``serving_hosts``)."""
    return not n.net.multi_host and not n.net.network_host


@dataclass(frozen=True)
class Share:
    host: str
    #: run with --network-host: also serves the single-host networks that name no host
    network_host: bool = False

    def base(self) -> list[str]:
        return [
            REGISTRY_SUBJECT,
            ANNOUNCEMENTS,
            LEGACY_ANNOUNCEMENTS,
            RETIRED_HOSTS,
            host_subject(self.host),
            placement_subject(self.host),
        ]

    def networks_needed(self, state: State, joining: Set[str] = frozenset()) -> set[str]:
        """The networks whose events can change this host's desired state now, plus those it
        has just *joined* (``joining``: a ``NetworkHostJoined`` for it was folded, the network's
        subject not yet read past it)."""
        out = {nid for nid in joining if nid in state.networks}
        return out | self.serving(state)

    def serving(self, state: State, only: Set[str] | None = None) -> set[str]:
        """The live networks where this host holds an address, is the network host, or — run
        with ``--network-host`` — may serve (single-host, naming no host): of all, or of
        ``only`` (the networks an event touched: membership depends on nothing else, so the
        set follows the change, not the size of the cloud)."""
        nets = state.networks
        candidates = nets.values() if only is None else (nets[i] for i in only if i in nets)
        return {
            n.network_id
            for n in candidates
            if (
                n.host_allocated.get(self.host)
                or n.net.network_host == self.host
                or (self.network_host and served_by_network_hosts(n))
                # multi-host: an address of ours held for its DHCP release (we serve it until
                # the release, which is on the network's subject: executor/fragments.py)
                or (n.net.multi_host and holds(n, self.host))
            )
        }

    def subjects(self, networks: set[str], every: bool = False) -> list[str]:
        """The filter subjects: the base, and the networks' subjects — or, with ``every`` (a
        host of many networks), every network's."""
        if every:
            return sorted([*self.base(), ALL_NETWORKS])
        return sorted([*self.base(), *(network_subject(n) for n in networks)])


def additions(state: State, before: set[str], after: set[str]) -> dict[str, int]:
    """Network subjects to read from where the fold left them (after a re-created id's
    creation: events/prune.py ``read_from``): subject -> first sequence."""
    return {network_subject(n): read_from(state, n) for n in sorted(after - before)}


#: After a resubscription that took T seconds, the next one waits until RESUBSCRIBE_SPACING x
#: T have passed (joins arriving meanwhile are taken together): the upkeep of a share of
#: 2,000 networks (~0.35 s of server CPU per new consumer) stays under a quarter of the time.
RESUBSCRIBE_SPACING = 3.0
#: ... but never longer than this: the cost also counts the backfill read (a switch to every
#: network reads every network's history), and a join must not wait for long (a share of 2,500
#: filters, the most below half of 5,000 networks, costs ~0.65 s to create).
RESUBSCRIBE_MAX_PAUSE = 2.0


def resubscribe_pause(last_cost: float, since: float) -> float:
    """Seconds to wait before the next resubscription: the last one cost ``last_cost`` seconds
    and ended ``since`` seconds ago."""
    return min(RESUBSCRIBE_MAX_PAUSE, max(0.0, RESUBSCRIBE_SPACING * last_cost - since))
