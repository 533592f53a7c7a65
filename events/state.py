"""State folded from the log: what the deciders decide on.

``State.apply(seq, subject, envelope)`` is the fold (``evolve``). It mutates in place — a
network with 60,000 addresses in use cannot be copied per event — but it is the only thing that
mutates state, and deciders only read it. Allocation cost does not grow with the addresses in
use: each pool of addresses keeps a high-water mark plus a sorted list of freed offsets.

The pieces it folds into live beside it — a network and its fixed IPs (events/state_network.py),
a floating pool and its addresses (events/state_floating.py), the free offsets of either
(events/state_offsets.py) — and are imported from here, the fold's public home. So do two parts
of the fold itself, mixins of :class:`State` named in its dispatch table: the host handlers
(announcements, retirements, sighting reports: events/state_hosts.py ``HostsFold``) and the
floating-IP handlers (events/state_floating.py ``FloatingFold``).
"""

from __future__ import annotations

import heapq
import operator
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import netaddr

from .codec import Envelope
from .errors import Unfoldable
from .field_types import field_hints
from .host_events import HostAnnounced, HostEvent, HostInstancesChanged, HostInstancesSeen
from .ids import REGISTRY_SUBJECT, network_subject
from .placement_events import (
    FloatingIpMapped,
    FloatingIpUnmapped,
    LegacyAnnouncementIndexed,
    NetworkHostJoined,
    NetworkRetired,
)
from .reclaim_events import (
    FixedIpReclaimed,
    FixedIpReclaimSealed,
    FixedIpReconfirmed,
    HostSightings,
)
from .revert_events import NetworkReassociated
from .state_floating import FloatingFold, FloatingIp, PoolState, pool_offsets
from .state_hosts import HostsFold, superseded
from .state_network import NO_JOINS, FixedIp, NetworkState, network_state, serving_hosts
from .state_offsets import OffsetPool, overlap, parse_cidr
from .types import (
    EVENT_TYPES,
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpFreed,
    FixedIpLeased,
    FixedIpMoved,
    FixedIpReleased,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    FloatingPoolCreated,
    HostRetired,
    NetworkAssociated,
    NetworkCreated,
    NetworkDeleted,
    NetworkDisassociated,
    NetworkEvent,
    PoolEvent,
)
from .wire_fast import compact, event_of

#: The meaning of the fold: bump it whenever ``State.apply`` (or what it keeps) changes, so that
#: snapshots written by older code are refused and the fold is rebuilt from the log.
FOLD_VERSION = 15


#: a MAC counted on a host (+1) or no more (-1): (host, MAC, delta)
MacCount = tuple[str, str, int]
#: an event folded ahead: (seq, its time if the fold took it, its MAC counts)
Held = tuple[int, float | None, list[MacCount]]


@dataclass
class State(HostsFold, FloatingFold):
    """Everything the command service decides on, folded from the whole stream."""

    networks: dict[str, NetworkState] = field(default_factory=dict)
    pools: dict[str, PoolState] = field(default_factory=dict)
    project_networks: dict[str, str] = field(default_factory=dict)
    #: instance -> the (network id, address) pairs it holds, sorted: a tuple, as nearly every
    #: instance holds one or two (building a set for each allocation was a third of its fold)
    instance_ips: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    subject_seq: dict[str, int] = field(default_factory=dict)
    last_seq: int = 0
    next_network_number: int = 1
    #: (network id, address) -> time of the deallocation, for addresses held until DHCP
    #: releases them (or the release timeout frees them).
    awaiting_release: dict[tuple[str, str], float] = field(default_factory=dict)
    #: time of the event being folded (handlers read it).
    event_time: float = 0.0
    #: host -> its executor's sighting reports (events/reclaim_events.py)
    sightings: dict[str, HostSightings] = field(default_factory=dict)
    #: hosts whose executor last announced itself with ``--network-host``
    network_hosts: set[str] = field(default_factory=set)
    #: host -> the sequence of its latest announcement while that one is on the host's own
    #: subject (executors announced there before ``netledger.evt.announce.<host>``) and no
    #: ``LegacyAnnouncementIndexed`` points at it: what the service indexes for the executors
    #: (events/placement.py ``legacy_indexes``)
    legacy_announced: dict[str, int] = field(default_factory=dict)
    #: network id -> the sequence of its ``NetworkDeleted`` while no ``NetworkRetired`` of it
    #: followed (deletions written before Dec 2026; in a log written since, emptied by the
    #: deletion's own batch): what the service retires on the registry for the executors that
    #: never read the deletion (events/placement.py ``legacy_retirements``). A re-creation of
    #: the id takes it out: retired then, the new network would leave the executors' views.
    unretired: dict[str, int] = field(default_factory=dict)
    #: network id -> the sequence of its ``NetworkCreated``, for a network created under a
    #: number below ``next_network_number`` (never decided: ids only grow; a hand-made log):
    #: an id the fold may have known, whose subject's entry it may have forgotten since
    #: (events/prune.py). The older network's messages there are all before it: a later
    #: reading of the subject begins after it, and the command service asks the log where
    #: they end (the OCC check: service/recreated.py). Goes with the network.
    recreated: dict[str, int] = field(default_factory=dict)
    #: (seq, network id) of each deletion, retirement and re-creation folded, a heap by seq:
    #: what events/prune.py may forget once the reader has read past it. A reader's
    #: bookkeeping, not the fold's meaning: not compared, not in snapshots (taken pruned).
    prunable: list[tuple[int, str]] = field(default_factory=list, repr=False, compare=False)
    #: subject -> its last message as the log says, for a re-created network's subject the
    #: fold forgot (asked by the command service: service/recreated.py): the next append's
    #: OCC check until the fold holds a message there (or a conflict: asked again, service/
    #: lanes.py). Not the fold: not compared, not saved.
    learned: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    #: host -> MAC (lower case) -> its allocated addresses there (derived from the networks'
    #: ``fixed``, rebuilt after a snapshot): when the last one ends, the host's memory of
    #: when it last saw that MAC goes too (:meth:`_unallocate`)
    host_macs: dict[str, dict[str, int]] = field(default_factory=dict)
    #: what events folded ahead of the log's order change of ``host_macs`` (so of the
    #: sightings) and ``event_time``, held back until the log's order reaches them: a heap by
    #: seq (events/fold_ahead.py). Empty in every fold but the command service's.
    held: list[Held] = field(default_factory=list, repr=False, compare=False)
    #: where the MAC counts of the event being folded ahead go (None: counted at once)
    holding: list[MacCount] | None = field(default=None, repr=False, compare=False)

    def rebuild_host_macs(self) -> None:
        self.host_macs = {}
        for n in self.networks.values():
            for ip in n.fixed.values():
                if ip.allocated:
                    self._count_mac(ip.host, ip.mac, +1)

    def _count_mac(self, host: str | None, mac: str, delta: int) -> None:
        if host is None:
            return
        if self.holding is not None:
            self.holding.append((host, mac, delta))
            return
        macs = self.host_macs.get(host)
        if macs is None:
            macs = self.host_macs[host] = {}
        mac = mac.lower()  # (str.islower first costs more: no ASCII path in 3.11)
        left = macs.get(mac, 0) + delta
        if left > 0:
            macs[mac] = left
            return
        macs.pop(mac, None)
        if not macs:
            del self.host_macs[host]
        # No allocation on this host has this MAC any more: reclaim never asks about it again
        # (only allocated addresses are candidates; a new allocation of the MAC is judged from
        # its own sequence, after any sighting kept now). Without this the host's sightings
        # would remember every MAC it ever saw: the oldest report, which bounds the rest, is
        # kept forever (events/reclaim_events.py: HostSightings._thin).
        h = self.sightings.get(host)
        if h is not None:
            h.forget(mac)
            if host not in self.host_macs:
                h.keep_newest()  # (no allocation here any more: events/reclaim_events.py)

    def count_macs(self, counts: list[MacCount]) -> None:
        """MAC counts held back (events/fold_ahead.py), counted now."""
        for host, mac, delta in counts:
            self._count_mac(host, mac, delta)

    def _unallocate(self, n: NetworkState, ip: FixedIp) -> None:
        if ip.allocated:
            n.unallocate(ip)
            self._count_mac(ip.host, ip.mac, -1)

    def seq_of(self, subject: str) -> int:
        """The last message on ``subject`` the fold knows of: what the next append there is
        OCC-checked on."""
        seq = self.subject_seq.get(subject, 0)
        if not seq and self.learned:
            return self.learned.get(subject, 0)
        return seq

    def live_networks(self) -> Iterator[NetworkState]:
        """The networks (a deleted one leaves :attr:`networks`: every one there is live)."""
        return iter(self.networks.values())

    # --- the fold ---------------------------------------------------------------------

    def apply(self, seq: int, subject: str, env: Envelope) -> bool:
        """Fold one stored event in. Returns False when ``seq`` was already applied."""
        if seq <= self.subject_seq.get(subject, 0):
            return False
        ev = env.event
        if isinstance(ev, HostEvent) and not ev.accepts_subject(subject):
            # Written on another host's subject (each executor may write only its own): a
            # host speaking for another one is not believed (sightings decide reclaims).
            self.skip(seq, subject)
            self.event_time = env.time
            return True
        self._evolve(seq, subject, ev, env.time)
        return True

    def fold_message(
        self, seq: int, subject: str, env: Envelope | None, why: str = "undecodable"
    ) -> str | None:
        """One stored message, whatever it holds (``env`` None: it did not decode, ``why``):
        None if it is folded in (or was already), else why it is not — the caller records it
        and goes on. Either way its subject's sequence moves past it (:meth:`skip`)."""
        if env is None:
            self.skip(seq, subject)
            return why
        ev = env.event
        if not ev.accepts_subject(subject):
            self.skip(seq, subject)
            return f"{ev.TYPE} does not belong on {subject}"
        if seq <= self.subject_seq.get(subject, 0):
            return None
        try:
            self._evolve(seq, subject, ev, env.time)
        except Unfoldable as exc:
            return exc.message
        return None

    def fold_wire(self, seq: int, subject: str, w: Any) -> str | None:
        """:meth:`fold_message` of a message that :func:`~.wire_fast.wire_of` read (``w``)
        and that is new on its subject (``seq`` after the subject's last one): the same state
        and the same answer, without building the envelope — nor the event, for the host
        reports the fold only counts (half of a cloud's log), nor for the handlers that read
        only its fields (:data:`_READ_FIELDS`: given the message's own struct of them) — and,
        for the usual types, without asking the event its subject (see :func:`_plan`)."""
        cls = w.EVENT
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = _plan(cls)
        handler, prefix, name_of, also, fields = plan
        ev = None
        if prefix is None:
            ev = event_of(w)
            if not ev.accepts_subject(subject):
                self.skip(seq, subject)
                return f"{cls.TYPE} does not belong on {subject}"
        elif subject != (prefix if name_of is None else prefix + name_of(w.data)) and (
            also is None or subject != also[0] + also[1](w.data)
        ):
            self.skip(seq, subject)
            return f"{cls.TYPE} does not belong on {subject}"
        # What _evolve does (every other reader folds through it), without its calls.
        self.subject_seq[subject] = seq
        if seq > self.last_seq:
            self.last_seq = seq
        self.event_time = w.time
        if handler is None:
            return None
        if ev is None:
            ev = w.data if fields else event_of(w)
        try:
            handler(self, ev, seq)
        except Exception as exc:
            return Unfoldable(f"{cls.TYPE} cannot be folded: {exc}").message
        return None

    def _evolve(self, seq: int, subject: str, ev: Event, time: float) -> None:
        """The fold of an event new on its subject, which it belongs on (:meth:`apply` and
        :meth:`fold_message` check both: every reader folds every event through here)."""
        self.subject_seq[subject] = seq
        if seq > self.last_seq:
            self.last_seq = seq
        self.event_time = time
        handler = _HANDLERS.get(type(ev))
        if handler is not None:
            try:
                handler(self, ev, seq)
            except Exception as exc:
                # Never fatal to a reader, and never again at the next start (every start
                # folds the same log): the message is refused like an undecodable one. Its
                # subject's sequence has moved past it (see skip); the handlers check what
                # they parse before they change anything (tests/events/test_fold_refusals.py).
                raise Unfoldable(f"{ev.TYPE} cannot be folded: {exc}") from exc

    def skip(self, seq: int, subject: str) -> None:
        """A stored message not folded in (undecodable, on a subject its event does not
        belong on): its subject's sequence still moves past it. The log's OCC check counts
        every message on a subject, so the next decision on that subject must expect this
        one — else every append there is refused as a conflict, at every start again."""
        if seq > self.subject_seq.get(subject, 0):
            self.subject_seq[subject] = seq
        if seq > self.last_seq:
            self.last_seq = seq

    def _network_created(self, ev: NetworkCreated, seq: int) -> None:
        if ev.network_id in self.networks:
            # Never decided (ids only grow); folded, it would drop the network's allocations
            # and hand their addresses out again. The projector refuses it alike.
            raise ValueError(f"network {ev.network_id} already exists")
        self.networks[ev.network_id] = network_state(compact(ev))  # (kept: see compact)
        self.unretired.pop(ev.network_id, None)
        if ev.project:
            self.project_networks.setdefault(ev.project, ev.network_id)
        if ev.network_id.isascii() and ev.network_id.isdigit():  # "²" is a digit, not an int
            number = int(ev.network_id)
            if number < self.next_network_number:
                self.recreated[ev.network_id] = seq  # (see the field)
                heapq.heappush(self.prunable, (seq, ev.network_id))
            self.next_network_number = max(self.next_network_number, number + 1)

    def _pool_created(self, ev: FloatingPoolCreated, seq: int) -> None:
        if ev.pool in self.pools:  # as a network's: never decided, and refused by the projector
            raise ValueError(f"pool {ev.pool} already exists")
        ipnet = parse_cidr(ev.cidr)
        for other in self.pools.values():
            if overlap(ipnet, other.ipnet):  # never decided (PoolOverlap); the projector alike
                raise ValueError(f"pool {ev.pool} ({ev.cidr}) overlaps pool {other.name}")
        self.pools[ev.pool] = PoolState(created=ev, ipnet=ipnet, pool=pool_offsets(ipnet))

    def _net(self, network_id: str, seq: int) -> NetworkState | None:
        n = self.networks.get(network_id)
        if n is not None:
            n.seq = seq
        return n

    def _network_deleted(self, ev: NetworkDeleted, seq: int) -> None:
        held = self.networks.get(ev.network_id)
        if held is not None and held.fixed:
            # Never decided (a network is deleted once empty); folded, the deciders would go
            # on deciding for its addresses, which the projector refuses (a deleted network).
            raise ValueError(f"network {ev.network_id} has {len(held.fixed)} address(es) in use")
        # Gone from the fold: nothing decides on a deleted network again (every decider
        # refuses one not in ``networks``, a re-created id starts afresh), and a cloud that
        # creates and deletes networks for years keeps only the live ones in memory and in its
        # snapshots. Its subject's sequence stays until the reader has read past it
        # (events/prune.py).
        n = self.networks.pop(ev.network_id, None)
        if n is not None:
            self._forget(n)
        heapq.heappush(self.prunable, (seq, ev.network_id))
        self.unretired[ev.network_id] = seq  # until its NetworkRetired, next in its batch

    def _network_retired(self, ev: NetworkRetired, seq: int) -> None:
        # The deletion is folded already (before it in its batch, or long before: a pointer
        # written for an older deletion); to the whole log's fold, nothing else changes.
        self.unretired.pop(ev.network_id, None)

    def _forget(self, n: NetworkState) -> None:
        """What names network ``n`` besides :attr:`networks` (popped from it already)."""
        if n.project and self.project_networks.get(n.project) == n.network_id:
            del self.project_networks[n.project]
        if self.recreated.pop(n.network_id, None) is not None:
            self.learned.pop(network_subject(n.network_id), None)

    def retire(self, network_id: str, seq: int) -> bool:
        """The registry's ``NetworkRetired`` of ``network_id`` at ``seq`` (events/placement.py),
        for a reader of a share (executor/view.py): whether the network was still here, then
        dropped. The network's ``NetworkDeleted`` is on its own subject, before ``seq``; a
        reader of the whole log has folded it by now (nothing here: False), an executor that no
        longer read that subject — or never did — has not. What it holds of the network is of a
        point before the deletion (its host's share stopped there: other hosts' addresses,
        deallocated since) and goes with it; the network's subject counts as read up to ``seq``
        (its messages before are the deleted network's: a later reading of the subject — a
        re-created id, or the subject read after the registry at a start, journal/follow.py —
        begins after them, never at the old deletion; forgotten once the reader has read past
        it: events/prune.py). Not a fold handler: the fold of the whole log never finds the
        network here in a log the service writes, and must not drop one with addresses in use
        on a registry message (it refuses such a NetworkDeleted)."""
        n = self.networks.pop(network_id, None)
        if n is None:
            return False
        for address, ip in n.fixed.items():
            self._unbind_instance(n, ip.instance, address)
            self._unallocate(n, ip)
            self.awaiting_release.pop((network_id, address), None)
        self._forget(n)
        subject = network_subject(network_id)
        if seq > self.subject_seq.get(subject, 0):
            self.subject_seq[subject] = seq
        heapq.heappush(self.prunable, (seq, network_id))
        return True

    def _network_associated(self, ev: NetworkAssociated | NetworkReassociated, seq: int) -> None:
        n = self.networks.get(ev.network_id)  # the event is on the project's subject
        if n is not None:  # (a deleted network: never decided)
            n.project = ev.project
            self.project_networks[ev.project] = ev.network_id

    def _network_disassociated(self, ev: NetworkDisassociated, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is not None:
            n.project = None
            if self.project_networks.get(ev.project) == ev.network_id:
                del self.project_networks[ev.project]

    def _fixed_allocated(self, ev: FixedIpAllocated, seq: int) -> None:
        n = self.networks.get(ev.network_id)
        if n is None:  # (a deleted network: never decided)
            return
        # Its addresses are checked before anything changes: refused, it changes nothing.
        # The address naming it is IPv4, or on an IPv6-only network in its served /64.
        offset = n.offset_in(ev.address) if n.ipnet is not None else None
        if n.ipnet is None:
            n.offset6_in(ev.address)
        offset6 = None
        if ev.address_v6 is not None:
            if n.ipnet6 is not None:
                offset6 = n.offset6_in(ev.address_v6)
            elif not n.in_cidr_v6(ev.address_v6):
                raise ValueError(f"{ev.address_v6} is not in network {n.network_id}'s cidr_v6")
        n.seq = seq
        if offset is not None:
            n.pool.take(offset)
        old = n.fixed.get(ev.address)
        if old is not None:
            self._unallocate(n, old)
        ip = n.fixed[ev.address] = FixedIp(
            ev.address,
            ev.instance,
            ev.mac,
            ev.host,
            ev.project,
            allocated_seq=seq,
            address_v6=ev.address_v6,
        )
        if ev.address_v6 is not None and n.ipnet6 is not None:
            n.v6[ev.address_v6] = ev.address
            if n.pool6 is not None and offset6 is not None:
                n.pool6.take(offset6)
        n.count_host(ip, +1)
        self._count_mac(ip.host, ip.mac, +1)
        n.by_instance[ev.instance] = ev.address
        n.macs[ev.mac] = ev.address
        pair = (ev.network_id, ev.address)
        held = self.instance_ips.get(ev.instance)
        if held is None:
            self.instance_ips[ev.instance] = (pair,)
        elif pair not in held:
            self.instance_ips[ev.instance] = tuple(sorted((*held, pair)))

    def _free(self, n: NetworkState, address: str) -> None:
        self.awaiting_release.pop((n.network_id, address), None)
        ip = n.fixed.pop(address, None)
        if ip is None:
            return
        self._unallocate(n, ip)
        if n.ipnet is not None:
            n.pool.release(n.offset(address))
        if ip.address_v6 is not None and n.v6.get(ip.address_v6) == address:
            del n.v6[ip.address_v6]
            if n.pool6 is not None:
                n.pool6.release(n.offset6(ip.address_v6))
        if n.macs.get(ip.mac) == address:
            del n.macs[ip.mac]

    def _unbind_instance(self, n: NetworkState, instance: str, address: str) -> None:
        if n.by_instance.get(instance) == address:
            del n.by_instance[instance]
        held = self.instance_ips.get(instance)
        pair = (n.network_id, address)
        if held is None:
            return
        if held == (pair,):  # (nearly every instance: one address)
            del self.instance_ips[instance]
        elif pair in held:
            self.instance_ips[instance] = tuple(p for p in held if p != pair)

    def _fixed_deallocated(self, ev: FixedIpDeallocated, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is None:
            return
        self._unbind_instance(n, ev.instance, ev.address)
        if ev.freed:
            self._free(n, ev.address)
        elif ev.address in n.fixed:
            ip = n.fixed[ev.address]
            self._unallocate(n, ip)
            ip.deallocated_at = self.event_time
            self.awaiting_release[(n.network_id, ev.address)] = self.event_time

    def _fixed_leased(self, ev: FixedIpLeased, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is not None and ev.address in n.fixed:
            if ev.v6:
                n.fixed[ev.address].leased_v6 = True
            else:
                n.fixed[ev.address].leased = True

    def _fixed_released(self, ev: FixedIpReleased, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is None:
            return
        if ev.freed:
            self._free(n, ev.address)
        elif ev.address in n.fixed:
            if ev.v6:
                n.fixed[ev.address].leased_v6 = False
            else:
                n.fixed[ev.address].leased = False

    def _fixed_freed(self, ev: FixedIpFreed, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is not None:
            self._free(n, ev.address)

    def _fixed_reclaimed(self, ev: FixedIpReclaimed, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is not None:
            self._unbind_instance(n, ev.instance, ev.address)
            self._free(n, ev.address)

    def _reclaim_sealed(self, ev: FixedIpReclaimSealed, seq: int) -> None:
        self._net(ev.network_id, seq)

    def _fixed_reconfirmed(self, ev: FixedIpReconfirmed, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is not None and ev.address in n.fixed:
            n.fixed[ev.address].allocated_seq = seq

    def _fixed_moved(self, ev: FixedIpMoved, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        ip = None if n is None else n.fixed.get(ev.address)
        if n is None or ip is None or not ip.allocated or ip.instance != ev.instance:
            return
        # Counted off the old host and onto the new one: its placement, and the MACs whose
        # sightings reclaim keeps (the old host's memory of this MAC goes with it).
        n.count_host(ip, -1)
        self._count_mac(ip.host, ip.mac, -1)
        ip.host = ev.host
        ip.allocated_seq = seq
        n.count_host(ip, +1)
        self._count_mac(ip.host, ip.mac, +1)

    def _floating_mapped(self, ev: FloatingIpMapped, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        if n is not None:
            n.floating[ev.floating] = (ev.fixed, ev.pool)

    def _floating_unmapped(self, ev: FloatingIpUnmapped, seq: int) -> None:
        n = self._net(ev.network_id, seq)
        held = None if n is None else n.floating.get(ev.floating)
        if n is not None and held is not None and held[0] == ev.fixed:
            del n.floating[ev.floating]

    def _host_joined(self, ev: NetworkHostJoined, seq: int) -> None:
        n = self.networks.get(ev.network_id)
        # A join from before the network's re-creation is the older network's: read in the
        # log's order it went with that one; a share's start reads the registry before the
        # placements (journal/follow.py), and must not give it to the new network.
        if n is not None and seq > self.recreated.get(ev.network_id, 0):
            if n.joined is NO_JOINS:  # (shared: see the field)
                n.joined = {ev.host}
            else:
                n.joined.add(ev.host)

    def dhcp_hosts(self, n: NetworkState, ip: FixedIp) -> set[str]:
        """The hosts whose dnsmasq serves ``ip``: the serving hosts, with multi-host only the
        instance's own."""
        return serving_hosts(n, {ip.host} if ip.host else set(), self.network_hosts)

    # --- queries the deciders use -----------------------------------------------------

    def unseen(self, n: NetworkState, ip: FixedIp) -> bool:
        """Whether ``ip``'s host has reported on its network since the allocation without it
        (the first half of a reclaim candidate: events/reclaim.py)."""
        if ip.host is None:
            return False
        h = self.sightings.get(ip.host)
        return h is not None and h.absence(ip.mac, n.network_id, ip.allocated_seq) is not None

    def floating_for_fixed(self, network_id: str, address: str) -> list[FloatingIp]:
        return [
            f
            for p in self.pools.values()
            for f in p.floating.values()
            if f.network_id == network_id and f.fixed_address == address
        ]

    def find_fixed(self, address: str) -> tuple[NetworkState, FixedIp] | None:
        """The allocation holding ``address`` (IPv4, or IPv6: its ``address_v6``)."""
        ip = netaddr.IPAddress(address)
        if ip.version == 6:
            text = str(ip)
            for n in self.live_networks():
                if n.ipnet6 is not None and ip in n.ipnet6:
                    key = n.v6.get(text)
                    held = n.fixed.get(key) if key is not None else None
                    return (n, held) if held is not None else None
            return None
        for n in self.live_networks():
            if n.ipnet is not None and ip in n.ipnet:
                fixed = n.fixed.get(address)
                return (n, fixed) if fixed is not None else None
        return None


_HANDLERS: dict[type, Callable[[State, Any, int], None]] = {
    NetworkCreated: State._network_created,
    FloatingPoolCreated: State._pool_created,
    NetworkDeleted: State._network_deleted,
    NetworkAssociated: State._network_associated,
    NetworkDisassociated: State._network_disassociated,
    # The network's side of the NetworkAssociated of the same revert: the same fields, folded
    # the same way and nothing else (not even the network's seq), so a fold that skipped it as
    # undecodable (a reader older than it) holds the same state, and its snapshots stay good.
    NetworkReassociated: State._network_associated,
    NetworkRetired: State._network_retired,
    HostRetired: State._host_retired,
    FixedIpAllocated: State._fixed_allocated,
    FixedIpDeallocated: State._fixed_deallocated,
    FixedIpLeased: State._fixed_leased,
    FixedIpReleased: State._fixed_released,
    FixedIpFreed: State._fixed_freed,
    FixedIpReclaimed: State._fixed_reclaimed,
    FixedIpReclaimSealed: State._reclaim_sealed,
    FixedIpReconfirmed: State._fixed_reconfirmed,
    FixedIpMoved: State._fixed_moved,
    HostInstancesSeen: State._instances_seen,
    HostInstancesChanged: State._instances_changed,
    HostAnnounced: State._host_announced,
    NetworkHostJoined: State._host_joined,
    LegacyAnnouncementIndexed: State._announcement_indexed,
    FloatingIpMapped: State._floating_mapped,
    FloatingIpUnmapped: State._floating_unmapped,
    FloatingIpAllocated: State._floating_allocated,
    FloatingIpAssociated: State._floating_associated,
    FloatingIpDisassociated: State._floating_disassociated,
    FloatingIpDeallocated: State._floating_deallocated,
}


#: The handlers that read nothing of their event but its fields (no method, no property, no
#: ``isinstance``, the event itself not kept): :meth:`State.fold_wire` gives them the struct
#: :func:`~.wire_fast.wire_of` decoded, whose attributes are the event's fields with the same
#: values (:func:`~.wire_fast.event_of` makes the event's ``__dict__`` of them). Building the
#: event (an object and its dict) and reading its fields through that dict were ~6% of a
#: start's fold of a tail. A handler that needs the event itself is left out:
#: tests/events/test_fold_wire_fields.py holds each listed one to the event's fold.
_READ_FIELDS: frozenset[Callable[[State, Any, int], None]] = frozenset(
    {
        State._network_associated,
        State._network_disassociated,
        State._fixed_allocated,
        State._fixed_deallocated,
        State._fixed_leased,
        State._fixed_released,
        State._fixed_freed,
        State._fixed_reclaimed,
        State._reclaim_sealed,
        State._fixed_reconfirmed,
        State._fixed_moved,
        State._instances_seen,
        State._instances_changed,
        State._host_joined,
        State._floating_mapped,
        State._floating_unmapped,
        State._floating_allocated,
        State._floating_associated,
        State._floating_disassociated,
        State._floating_deallocated,
    }
)


#: an event class's ``subject`` -> the field it names its subject by (None: one subject)
_SUBJECT_FIELDS: dict[Callable[..., str], str | None] = {
    HostEvent.subject: "host",
    NetworkEvent.subject: "network_id",
    PoolEvent.subject: "pool",
    NetworkAssociated.subject: "project",
    NetworkHostJoined.subject: "host",
    LegacyAnnouncementIndexed.subject: None,
    NetworkRetired.subject: None,
    HostRetired.subject: "host",
    NetworkCreated.subject: None,
    FloatingPoolCreated.subject: None,
}

#: an event class's ``accepts_subject`` that takes its own subject and one more -> that one's
#: ``subject`` function (of :data:`_SUBJECT_FIELDS`); each is ``subject in (self.subject(),
#: <that one>(self))``
_ALSO_ACCEPTED: dict[Callable[..., bool], Callable[..., str]] = {
    # early streams stored it on the network's subject
    NetworkAssociated.accepts_subject: NetworkEvent.subject,
}

#: the subject of an event class as (its prefix, or the subject itself; the getter of the
#: field ending it, None when no field does)
_Subject = tuple[str, Callable[[Any], str] | None]
#: how State.fold_wire folds a class: (its handler or None, its subject (the prefix, the
#: getter: both None when the event is asked), the other subject it accepts (None: none),
#: whether the handler takes the message's fields for the event (:data:`_READ_FIELDS`))
_Plan = tuple[
    Callable[[State, Any, int], None] | None,
    str | None,
    Callable[[Any], str] | None,
    tuple[str, Callable[[Any], str]] | None,
    bool,
]
#: event class -> its plan, made at its first message
_PLANS: dict[type, _Plan] = {}


def plan_fold_wire() -> None:
    """Make :meth:`State.fold_wire`'s plan of every registered event class now rather than at
    its first message (see :func:`~.wire_fast.prepare_wire_of`)."""
    for cls in list(EVENT_TYPES.values()):
        if cls not in _PLANS:
            _PLANS[cls] = _plan(cls)


def _plan(cls: type[Event]) -> _Plan:
    """How :meth:`State.fold_wire` folds ``cls``. Its subject is checked without an event when
    the class keeps Event's ``accepts_subject`` (its own subject only), or one of
    :data:`_ALSO_ACCEPTED`, and its subjects are made by functions of :data:`_SUBJECT_FIELDS`
    (see :func:`_subject`); otherwise the event is asked."""
    handler = _HANDLERS.get(cls)
    fields = handler in _READ_FIELDS
    accepts = cls.accepts_subject
    own = _subject(cls, cls.subject)
    if own is None or (accepts is not Event.accepts_subject and accepts not in _ALSO_ACCEPTED):
        return handler, None, None, None, fields
    also = None
    if accepts in _ALSO_ACCEPTED:
        other = _subject(cls, _ALSO_ACCEPTED[accepts])
        if other is None or other[1] is None:
            return handler, None, None, None, fields
        also = (other[0], other[1])
    return handler, own[0], own[1], also, fields


def _subject(cls: type[Event], subject_of: Callable[..., str]) -> _Subject | None:
    """What ``subject_of`` (one of :data:`_SUBJECT_FIELDS`) makes of a ``cls``: its subject, or
    its prefix and the getter of the field ending it when that field is typed ``str`` (text, so
    the prefix and it make what ``subject_of`` makes: checked here too); None otherwise."""
    if subject_of not in _SUBJECT_FIELDS:
        return None
    name = _SUBJECT_FIELDS[subject_of]
    if name is None:
        return subject_of(None), None
    if field_hints(cls).get(name) is not str:
        return None
    prefix = subject_of(types.SimpleNamespace(**{name: ""}))
    if subject_of(types.SimpleNamespace(**{name: "x"})) != prefix + "x":
        return None
    return prefix, operator.attrgetter(name)


__all__ = [
    "REGISTRY_SUBJECT",
    "FixedIp",
    "FloatingIp",
    "NetworkState",
    "OffsetPool",
    "PoolState",
    "State",
    "serving_hosts",
    "superseded",
]
