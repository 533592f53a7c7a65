"""The fold of host events: which hosts exist (their VTEPs) and what this host already applied.

``State`` (events/state.py) folds the domain events; host events only matter to executors, so
they are folded here. The *applied record* is what this host's executor said it did (links,
addresses, flood entries it created and has not removed since): an object the record holds but
the kernel lacks was damaged from outside, so re-creating it is a drift repair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import netaddr

from netledger.events.codec import Envelope
from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostAnnounced,
    HostEvent,
    HostFdbAdded,
    HostFdbRemoved,
    HostForwardingSet,
    HostLinkCreated,
    HostLinkRemoved,
    HostNatApplied,
    HostNatRemoved,
    HostReconciled,
)

log = logging.getLogger("netledger.executor")


def _is_address(text: str) -> bool:
    return bool(netaddr.valid_ipv4(text) or netaddr.valid_ipv6(text))


@dataclass
class HostBook:
    me: str
    announced: dict[str, HostAnnounced] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    addresses: set[tuple[str, str]] = field(default_factory=set)
    fdb: set[tuple[str, str]] = field(default_factory=set)
    nat: HostNatApplied | None = None
    forwarding: bool = False
    forwarding_v6: bool = False
    last_reconciled_seq: int = 0

    def retire(self, host: str) -> bool:
        """``host`` left the cloud (``HostRetired``): its announcement goes; True when it was
        here (another host's VTEP or role decides our flood entries and who serves what)."""
        return self.announced.pop(host, None) is not None

    def apply(self, env: Envelope) -> bool:
        """Fold a host event in; True when it changes what *this* host should build."""
        ev = env.event
        if not isinstance(ev, HostEvent):
            return False
        if isinstance(ev, HostAnnounced):
            if ev.vtep_address and not _is_address(ev.vtep_address):
                log.warning(
                    "host %s announced a VTEP that is no address: %r", ev.host, ev.vtep_address
                )
            before = self.announced.get(ev.host)
            self.announced[ev.host] = ev
            # Another host's VTEP or role decides our flood entries and who serves a network.
            return bool(ev.host != self.me and before != ev)
        if ev.host != self.me:
            return False
        if isinstance(ev, HostLinkCreated):
            self.links.add(ev.name)
        elif isinstance(ev, HostLinkRemoved):
            self.links.discard(ev.name)
        elif isinstance(ev, HostAddressAdded):
            self.addresses.add((ev.interface, ev.address))
        elif isinstance(ev, HostAddressRemoved):
            self.addresses.discard((ev.interface, ev.address))
        elif isinstance(ev, HostFdbAdded):
            self.fdb.add((ev.interface, ev.dst))
        elif isinstance(ev, HostFdbRemoved):
            self.fdb.discard((ev.interface, ev.dst))
        elif isinstance(ev, HostNatApplied):
            self.nat = ev
        elif isinstance(ev, HostNatRemoved):
            self.nat = None
        elif isinstance(ev, HostForwardingSet):
            if ev.version == 6:
                self.forwarding_v6 = ev.enabled
            else:
                self.forwarding = ev.enabled
        elif isinstance(ev, HostReconciled):
            self.last_reconciled_seq = max(self.last_reconciled_seq, ev.applied_seq)
        return False

    def network_hosts(self) -> set[str]:
        """Hosts that announced themselves as network hosts (serve networks with no host set)."""
        return {h for h, a in self.announced.items() if a.network_host}

    def vteps(self) -> dict[str, str]:
        """Every host's VXLAN underlay address — not one announced that is not an address
        (a typo of another host's ``--vtep-address`` before it was checked): that host gets no
        flood entries, as one without a VTEP, instead of failing this host's kernel work at
        every pass."""
        return {
            # In the kernel's notation (``FD00::2`` from an announcement written before the
            # option was normalized is ``fd00::2``): else the flood entry read back never
            # matched the one desired and was removed and added again at every pass.
            h: str(netaddr.IPAddress(a.vtep_address))
            for h, a in self.announced.items()
            if a.vtep_address and _is_address(a.vtep_address)
        }
