"""Events an executor appends on ``netledger.evt.host.<host>``: what it did to its kernel.

These are the only events an executor may write (NATS permissions enforce it in production).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .ids import announce_subject, host_subject
from .types import Event, event_type


@dataclass(frozen=True)
class HostEvent(Event):
    host: str

    def subject(self) -> str:
        return host_subject(self.host)


@event_type
@dataclass(frozen=True)
class HostAnnounced(HostEvent):
    """An executor started; ``vtep_address`` is its VXLAN underlay address (or None).

    Stored on ``netledger.evt.announce.<host>`` (streams before that stored it on the host's
    subject): every executor reads every announcement, but not the other hosts' reports."""

    TYPE: ClassVar[str] = "HostAnnounced"
    vtep_address: str | None
    physical_interface: str | None
    public_interface: str | None
    network_host: bool

    def subject(self) -> str:
        return announce_subject(self.host)

    def accepts_subject(self, subject: str) -> bool:
        return subject in (announce_subject(self.host), host_subject(self.host))


@event_type
@dataclass(frozen=True)
class HostLinkCreated(HostEvent):
    TYPE: ClassVar[str] = "HostLinkCreated"
    name: str
    kind: str
    network_id: str | None
    drift: bool
    detail: dict[str, Any] = field(default_factory=dict)


@event_type
@dataclass(frozen=True)
class HostLinkRepaired(HostEvent):
    """One of our links had drifted (down, detached, wrong MTU, alias, bridge options); fixed."""

    TYPE: ClassVar[str] = "HostLinkRepaired"
    name: str
    kind: str
    network_id: str | None
    changes: list[str]


@event_type
@dataclass(frozen=True)
class HostLinkEnslaved(HostEvent):
    """A link that is not ours (the physical interface, flat mode) was put into our bridge."""

    TYPE: ClassVar[str] = "HostLinkEnslaved"
    name: str
    master: str
    network_id: str | None
    drift: bool


@event_type
@dataclass(frozen=True)
class HostLinkRemoved(HostEvent):
    TYPE: ClassVar[str] = "HostLinkRemoved"
    name: str
    kind: str
    network_id: str | None
    reason: str


@event_type
@dataclass(frozen=True)
class HostAddressAdded(HostEvent):
    TYPE: ClassVar[str] = "HostAddressAdded"
    interface: str
    address: str
    network_id: str | None
    drift: bool


@event_type
@dataclass(frozen=True)
class HostAddressRemoved(HostEvent):
    TYPE: ClassVar[str] = "HostAddressRemoved"
    interface: str
    address: str
    network_id: str | None
    reason: str


@event_type
@dataclass(frozen=True)
class HostFdbAdded(HostEvent):
    """A head-end replication entry: flood ``interface``'s BUM traffic to the VTEP ``dst``."""

    TYPE: ClassVar[str] = "HostFdbAdded"
    interface: str
    dst: str
    network_id: str | None
    drift: bool


@event_type
@dataclass(frozen=True)
class HostFdbRemoved(HostEvent):
    TYPE: ClassVar[str] = "HostFdbRemoved"
    interface: str
    dst: str
    network_id: str | None
    reason: str


@event_type
@dataclass(frozen=True)
class HostNatApplied(HostEvent):
    """The host's nftables tables were replaced atomically with these floating-IP mappings
    (``floating``: floating -> fixed) and SNAT of ``snat_ranges`` to ``snat_to`` (None:
    masquerade on the public interface, or no SNAT when no range is served here), and the
    IPv6 /64s routed (never NATed) out of the bridges serving them (``routed_v6``: /64 ->
    bridge; added later, empty in older events).

    ``fixed_space``: the set of fixed ranges is every network's IPv4 range as the registry has
    it, not a list written here (``snat_ranges`` empty): a network created anywhere joins the
    set on every host without a report of its own — each NAT host appended one per network
    created before (Dec 2026). False in older events and with ``executor run --fixed-range``
    (``snat_ranges`` lists the configured ranges)."""

    TYPE: ClassVar[str] = "HostNatApplied"
    floating: dict[str, str]
    snat_ranges: list[str]
    drift: bool
    snat_to: str | None = None
    routed_v6: dict[str, str] = field(default_factory=dict)
    fixed_space: bool = False


@event_type
@dataclass(frozen=True)
class HostNatRemoved(HostEvent):
    """Nothing is NATed on this host any more: our nftables table was deleted."""

    TYPE: ClassVar[str] = "HostNatRemoved"
    reason: str


@event_type
@dataclass(frozen=True)
class HostForwardingSet(HostEvent):
    """Forwarding was set: ``net.ipv4.ip_forward`` (``version`` 4: a host serving gateways
    routes between networks) or ``net.ipv6.conf.all.forwarding`` (6: it serves an IPv6
    network; added later, older events are all 4)."""

    TYPE: ClassVar[str] = "HostForwardingSet"
    enabled: bool
    drift: bool
    version: int = 4


@event_type
@dataclass(frozen=True)
class HostApplyFailed(HostEvent):
    """An operation failed (logged once per distinct failure, not on every pass)."""

    TYPE: ClassVar[str] = "HostApplyFailed"
    operation: str
    target: str
    error: str
    errno: int | None


@event_type
@dataclass(frozen=True)
class HostReconciled(HostEvent):
    """A reconcile pass finished: the kernel matched the log up to ``applied_seq``."""

    TYPE: ClassVar[str] = "HostReconciled"
    applied_seq: int
    changes: int
    drift_repairs: int
    duration_ms: float


# --- DHCP (dnsmasq, one per bridge; executor/dhcp.py) --------------------------------------


@event_type
@dataclass(frozen=True)
class HostDhcpStarted(HostEvent):
    """dnsmasq was started for ``bridge`` with ``hosts`` hosts-file lines (``digest`` of the
    file); ``drift`` when the log says one was running there (it had died)."""

    TYPE: ClassVar[str] = "HostDhcpStarted"
    bridge: str
    network_id: str | None
    pid: int | None
    hosts: int
    digest: str
    drift: bool


@event_type
@dataclass(frozen=True)
class HostDhcpReloaded(HostEvent):
    """The hosts file of ``bridge`` was rewritten and dnsmasq sent SIGHUP. ``reason``:
    ``hosts`` (the log changed them), ``drift`` (the file on disk had been changed),
    ``adopted`` (a running dnsmasq of ours the log did not know, e.g. after a crash)."""

    TYPE: ClassVar[str] = "HostDhcpReloaded"
    bridge: str
    network_id: str | None
    pid: int | None
    hosts: int
    digest: str
    reason: str


@event_type
@dataclass(frozen=True)
class HostDhcpStopped(HostEvent):
    """dnsmasq of ``bridge`` was stopped and its files removed. ``reason``: ``stale`` (no
    longer served here), ``replaced`` (it was not running as it would be started now: its
    command line or environment differed, or its network namespace; the leases file is kept
    and a start follows), ``found-gone`` (the log said running, nothing was left)."""

    TYPE: ClassVar[str] = "HostDhcpStopped"
    bridge: str
    network_id: str | None
    pid: int | None
    reason: str


# --- sightings (executor/sightings.py; read by reclaiming, events/reclaim.py) ---------------


@event_type
@dataclass(frozen=True)
class HostInstancesSeen(HostEvent):
    """The instance MACs this host sees: learned (dynamic) entries in the forwarding database
    of its bridges and unexpired leases of its dnsmasq. ``networks``: the networks whose
    bridges were read (a report says nothing about a network it did not cover). Appended when
    the set changes (``reason``: ``start`` or ``change``; ``heartbeat`` in older logs, whose
    executors also appended it every minute), so that "unseen for the grace period" can be
    proven from the log alone. The whole set: at an executor's start and whenever it is not
    sure what the log last holds of it; otherwise it reports what changed
    (:class:`HostInstancesChanged`)."""

    TYPE: ClassVar[str] = "HostInstancesSeen"
    macs: list[str]
    networks: list[str]
    reason: str
    leases: int = 0


@event_type
@dataclass(frozen=True)
class HostInstancesChanged(HostEvent):
    """What changed in the instance MACs this host sees (as :class:`HostInstancesSeen`) since
    its report at stream sequence ``base_seq`` (its previous report, on this subject): MACs
    ``added`` and ``removed``, networks covered that were added and removed, and the number of
    MACs with a lease now. It says what a :class:`HostInstancesSeen` of the whole new set
    would (``reason`` ``change``), in the bytes of what changed: a host of 200 instances wrote
    ~3.8 KB when one booted.

    The executor sends it only when it knows the log's newest report of the host is the one at
    ``base_seq`` (executor/sightings.py); it sends the whole set at a start, after a report
    whose append it does not know stored, and every :data:`FULL_EVERY` reports. A reader whose
    newest report of the host is not the one at ``base_seq`` (a gap: one it did not fold) does
    not guess the set: it forgets the host's reports, as if it had none (events/state_hosts.py,
    docs/reclaim.md) — an absence is then proven from the next whole set on, never across a
    set nobody holds."""

    TYPE: ClassVar[str] = "HostInstancesChanged"
    base_seq: int
    added: list[str]
    removed: list[str]
    networks_added: list[str]
    networks_removed: list[str]
    leases: int


#: the executor reports its whole set at least every this many reports (deltas in between): a
#: reader that lost the base of a delta (docs/reclaim.md) holds a set again within as many
FULL_EVERY = 32
