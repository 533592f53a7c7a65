"""What every decider shares: the ``Decision`` it returns, the ``Pending`` record of the batch.

Also the checks more than one family of deciders makes (:func:`authorize`, :func:`live_network`).
Kept apart from :mod:`netledger.events.decide`, which dispatches to the deciders, so that the
network, fixed-IP and floating-IP deciders can import these without importing each other or the
dispatch table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codec import Actor
from .errors import Forbidden, NetworkNotFound
from .reclaim_events import FixedIpReclaimed
from .state import NetworkState, State
from .state_offsets import ip_int_of
from .types import Event, FixedIpAllocated, FixedIpDeallocated, FixedIpMoved, NetworkAssociated


@dataclass
class Decision:
    events: list[Event]
    result: dict[str, Any]


@dataclass
class Pending:
    """What earlier decisions of the same batch took (not yet in state)."""

    #: IPv4 addresses taken, as integers: the allocation's walk over a network's free offsets
    #: skips them by an integer lookup (as text, a batch of k paid ~k²/2 conversions)
    addresses: dict[str, set[int]] = field(default_factory=dict)
    addresses6: dict[str, set[str]] = field(default_factory=dict)
    macs: dict[str, set[str]] = field(default_factory=dict)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    project_networks: dict[str, str] = field(default_factory=dict)
    #: (network, instance) -> the host its allocation moved to (FixedIpMoved)
    moved: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (network, instance) deallocated: an allocation after it in the batch is a new one
    gone: set[tuple[str, str]] = field(default_factory=set)
    #: (host, network) -> how the batch changed the host's allocated addresses there: a host
    #: whose last one went earlier in the batch joins the network again (events/placement.py)
    host_delta: dict[tuple[str, str], int] = field(default_factory=dict)

    def _count(self, host: str | None, network_id: str, delta: int) -> None:
        if host is not None:
            key = (host, network_id)
            self.host_delta[key] = self.host_delta.get(key, 0) + delta

    def note(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, FixedIpAllocated):
                if ":" not in ev.address:  # an IPv6-only network's is named by its v6 address
                    taken = self.addresses.setdefault(ev.network_id, set())
                    taken.add(ip_int_of(ev.address, 4))
                if ev.address_v6 is not None:
                    self.addresses6.setdefault(ev.network_id, set()).add(ev.address_v6)
                self.macs.setdefault(ev.network_id, set()).add(ev.mac)
                self.instances[(ev.network_id, ev.instance)] = fixed_result(ev)
                self._count(ev.host, ev.network_id, +1)
            elif isinstance(ev, FixedIpMoved):
                self.moved[(ev.network_id, ev.instance)] = ev.host
                self._count(ev.host, ev.network_id, +1)
                self._count(ev.from_host, ev.network_id, -1)
            elif isinstance(ev, FixedIpDeallocated | FixedIpReclaimed):
                self._count(ev.host, ev.network_id, -1)
                key = (ev.network_id, ev.instance)
                self.gone.add(key)
                self.instances.pop(key, None)
                self.moved.pop(key, None)
            elif isinstance(ev, NetworkAssociated):
                self.project_networks[ev.project] = ev.network_id


def authorize(actor: Actor, project: str | None, what: str) -> None:
    """Let admins and the system act on anything, a project only on what that project holds."""
    if actor.role in ("admin", "system"):
        return
    if project is None or actor.project != project:
        raise Forbidden(
            f"project {actor.project!r} may not act on {what}", actor_project=actor.project
        )


def fixed_result(ev: FixedIpAllocated) -> dict[str, Any]:
    """The answer to an allocation; also kept in ``Pending`` so a retry in the batch gets it."""
    return {
        "address": ev.address,
        "address_v6": ev.address_v6,
        "network_id": ev.network_id,
        "instance": ev.instance,
        "mac": ev.mac,
        "host": ev.host,
        "project": ev.project,
    }


def live_network(state: State, network_id: str) -> NetworkState:
    """The network ``network_id``, refusing one never created or deleted."""
    n = state.networks.get(network_id)
    if n is None:
        raise NetworkNotFound(f"network {network_id} does not exist", network_id=network_id)
    return n
