"""The history generator's model of one host's executor, and a fast envelope encoder.

:class:`HostRt` keeps what the executor of a host has applied (the networks it has a bridge and
a VXLAN link in, the FDB entries toward the other hosts of each, its NAT table) and what it
should have (its instances per network, its floating IPs); :meth:`HostRt.sync` returns the host
events of the pass that brings one to the other — the events ``executor/host_report.py`` and
``executor/dhcp.py`` write for the same operations.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from netledger.events.codec import Actor, Envelope
from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostDhcpReloaded,
    HostDhcpStarted,
    HostDhcpStopped,
    HostEvent,
    HostFdbAdded,
    HostFdbRemoved,
    HostForwardingSet,
    HostLinkCreated,
    HostLinkRemoved,
    HostNatApplied,
    HostReconciled,
)

if TYPE_CHECKING:
    from history_gen import Cloud

_FIELDS: dict[type, tuple[str, ...]] = {}
_ACTORS: dict[Actor, dict[str, Any]] = {}
_packb = msgpack.Packer(use_bin_type=True).pack


def pack(env: Envelope) -> bytes:
    """``codec.encode(env)``, byte for byte, without ``dataclasses.asdict``'s deep copy (a
    third of the generator's time); tests/bench/test_history_gen.py checks the equality."""
    ev = env.event
    cls = type(ev)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    actor = _ACTORS.get(env.actor)
    if actor is None:
        actor = _ACTORS[env.actor] = env.actor.to_wire()
    data: bytes = _packb(
        {
            "type": ev.TYPE,
            "version": ev.VERSION,
            "id": env.event_id,
            "command_id": env.command_id,
            "time": env.time,
            "actor": actor,
            "data": {n: getattr(ev, n) for n in names},
        }
    )
    return data


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class HostRt:
    name: str
    vtep: str
    #: network -> instances allocated here (desired)
    nets: dict[str, int] = field(default_factory=dict)
    #: network -> VTEPs of the FDB entries made (present: bridge, VXLAN link, gateway, dnsmasq)
    links: dict[str, set[str]] = field(default_factory=dict)
    #: floating -> fixed address of this host's instances (desired)
    floating: dict[str, str] = field(default_factory=dict)
    #: MACs of the instances running here (what its sightings report)
    macs: set[str] = field(default_factory=set)
    nat: tuple[tuple[tuple[str, str], ...], tuple[str, ...]] | None = None
    forwarding: bool = False
    passes: int = 0

    def __post_init__(self) -> None:
        self.actor = Actor(project=None, role="system", user=f"executor:{self.name}")
        self.dhcp_actor = Actor(project=None, role="system", user=f"dhcp:{self.name}")

    def pass_id(self, seed: int) -> str:
        self.passes += 1
        return f"s{seed}-{self.name}-{self.passes}"

    def reconciled(self, applied_seq: int, changes: int, r: float) -> HostReconciled:
        return HostReconciled(
            host=self.name,
            applied_seq=applied_seq,
            changes=changes,
            drift_repairs=0,
            duration_ms=round(8.0 + 60.0 * r, 2),
        )

    def sync(self, cloud: Cloud, nids: list[str], dhcp: bool = True) -> list[HostEvent]:
        """The events of a pass after a change in ``nids`` (``dhcp``: this host's instances
        there changed, so its dnsmasq hosts file did)."""
        h = self.name
        out: list[HostEvent] = []
        for nid in nids:
            n = cloud.state.networks[nid]
            net = n.net
            bridge, vx = net.bridge, f"vx{net.vni}"
            count = self.nets.get(nid, 0)
            if count:
                peers = {
                    cloud.hosts[g].vtep
                    for g in cloud.net_hosts[nid]
                    if g != h and cloud.hosts[g].nets.get(nid)
                }
                have = self.links.get(nid)
                if have is None:
                    have = set()
                    detail = {
                        "master": bridge,
                        "vni": net.vni,
                        "parent": "eth1",
                        "local": self.vtep,
                    }
                    out += [
                        HostLinkCreated(h, bridge, "bridge", nid, False, {}),
                        HostLinkCreated(h, vx, "vxlan", nid, False, detail),
                        HostAddressAdded(
                            h, bridge, f"{net.gateway}/{n.ipnet.prefixlen}", nid, False
                        ),
                    ]
                for dst in sorted(peers - have):
                    out.append(HostFdbAdded(h, vx, dst, nid, False))
                for dst in sorted(have - peers):
                    out.append(HostFdbRemoved(h, vx, dst, None, "stale"))
                digest = _digest(f"{nid}:{count}:{self.passes}")
                if nid not in self.links:
                    out.append(
                        HostDhcpStarted(h, bridge, nid, 10_000 + self.passes, count, digest, False)
                    )
                elif dhcp:
                    out.append(HostDhcpReloaded(h, bridge, nid, None, count, digest, "hosts"))
                self.links[nid] = peers
            elif nid in self.links:
                have = self.links.pop(nid)
                out.append(HostDhcpStopped(h, bridge, nid, None, "stale"))
                out += [HostFdbRemoved(h, vx, dst, None, "stale") for dst in sorted(have)]
                out += [
                    HostAddressRemoved(
                        h, bridge, f"{net.gateway}/{n.ipnet.prefixlen}", None, "stale"
                    ),
                    HostLinkRemoved(h, vx, "vxlan", nid, "stale"),
                    HostLinkRemoved(h, bridge, "bridge", nid, "stale"),
                ]
        ranges = tuple(cloud.state.networks[nid].net.cidr for nid in sorted(self.links, key=int))
        nat = (tuple(sorted(self.floating.items())), ranges)
        if nat != self.nat:
            self.nat = nat
            out.append(HostNatApplied(h, dict(nat[0]), list(ranges), False, None))
        if self.links and not self.forwarding:
            self.forwarding = True
            out.append(HostForwardingSet(h, True, False))
        return out
