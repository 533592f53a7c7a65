"""What of the log can change this host: its *share*. Pure (the follower does the reading).

An executor does not follow the whole stream (that is every other host's reports and every
network's allocations: the cloud's read work would grow with hosts²). It follows, like OVN's
ovn-controller monitoring only the datapaths local to its chassis:

* the registry (networks and pools: which networks exist, who serves them),
* every host's announcement (``netledger.evt.announce.>``: VTEPs, network hosts),
* its own host subject (what it did) and its placement subject (``NetworkHostJoined``: the
  service records there when this host gets its first instance in a network),
* the subjects of the networks it needs: where it holds an allocated address, where it is the
  ``network_host``, and — a host run with ``--network-host`` — every network (it serves those
  that name no host). A network's subject also carries its floating IPs' NAT mappings
  (``FloatingIpMapped``), so no pool's history is read.

The network set is recomputed from the fold after every change (:func:`networks_needed`). A
network that becomes needed is read from where the fold left it (its subject's last folded
sequence) up to the point reached, then followed with the rest; a network no longer needed is
dropped (its folded state stays; a later join reads it on from there).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from netledger.events.ids import (
    ANNOUNCEMENTS,
    EVENT_PREFIX,
    REGISTRY_SUBJECT,
    host_subject,
    network_subject,
    placement_subject,
)
from netledger.events.state import State

ALL_NETWORKS = f"{EVENT_PREFIX}.network.>"


@dataclass(frozen=True)
class Share:
    host: str
    #: run with --network-host: serves the networks that name no host, so reads them all
    network_host: bool = False

    def base(self) -> list[str]:
        return [
            REGISTRY_SUBJECT,
            ANNOUNCEMENTS,
            host_subject(self.host),
            placement_subject(self.host),
        ]

    def networks_needed(self, state: State, joining: Set[str] = frozenset()) -> set[str]:
        """The networks whose events can change this host's desired state now, plus those it
        has just *joined* (``joining``: a ``NetworkHostJoined`` for it was folded, the network's
        subject not yet read past it)."""
        if self.network_host:
            return set()  # all of them: ALL_NETWORKS is in subjects()
        out = {nid for nid in joining if nid in state.networks}
        return out | self.serving(state)

    def serving(self, state: State, only: Set[str] | None = None) -> set[str]:
        """The live networks where this host holds an address or is the network host — of
        all, or of ``only`` (the networks an event touched: membership depends on nothing
        else, so the set follows the change, not the size of the cloud)."""
        nets = state.networks
        candidates = nets.values() if only is None else (nets[i] for i in only if i in nets)
        return {
            n.network_id
            for n in candidates
            if not n.deleted
            and (n.host_allocated.get(self.host) or n.net.network_host == self.host)
        }

    def subjects(self, networks: set[str], every: bool = False) -> list[str]:
        """The filter subjects: the base, and the networks' subjects — or, for a network host
        or with ``every`` (a host with many networks), every network's."""
        if self.network_host or every:
            return sorted([*self.base(), ALL_NETWORKS])
        return sorted([*self.base(), *(network_subject(n) for n in networks)])


#: From this many networks on, a host follows every network (``netledger.evt.network.>``)
#: instead of one subject each: the server recreated a consumer of 1,000 filter subjects in
#: ~85 ms at every network joined, against ~3 ms for a dozen; such a host serves a good part of
#: the cloud anyway. Back to one subject each below half of it.
EVERY_NETWORK_FROM = 64


def additions(state: State, before: set[str], after: set[str]) -> dict[str, int]:
    """Network subjects to read from where the fold left them: subject -> first sequence."""
    return {
        network_subject(n): state.seq_of(network_subject(n)) + 1 for n in sorted(after - before)
    }
