"""The revert owners rule: the project a *freed* address goes back to when a revert undoes its
deallocation (:func:`project_back`). ``FixedIpDeallocated`` records none; the allocation it
ended does (:func:`allocation_owner`: among the events reverted, or as the client read it from
the log), and the network's holder now decides whether that may stand. Part of
:mod:`netledger.events.revert_compensate`, which reads it off its shadow state. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .state import NetworkState
from .types import FixedIpAllocated, FixedIpDeallocated


class Refused(Exception):
    """One stored event cannot be compensated (collected into
    :class:`~netledger.events.revert_compensate.RevertConflict`)."""


@dataclass(frozen=True)
class Owner:
    """The project of the allocation a deallocation ended (None: it named none)."""

    project: str | None


class OwnersView(Protocol):
    """What the rule reads of the state as the revert's earlier compensations leave it
    (revert_compensate's ``_Shadow``)."""

    @property
    def at(self) -> int:
        """The stored sequence being compensated."""

    @property
    def allocations(self) -> Mapping[tuple[str, str], list[tuple[int, FixedIpAllocated]]]:
        """(network, address) -> its allocations among the events reverted, newest first."""

    @property
    def owners(self) -> Mapping[int, str | None]:
        """Deallocation seq -> the project of the allocation it ended, as the client read it."""

    def project_of(self, n: NetworkState) -> str | None: ...

    def project_since(self, n: NetworkState) -> int: ...


def allocation_owner(sh: OwnersView, ev: FixedIpDeallocated) -> Owner | None:
    """Whose the allocation the deallocation ``ev`` (stored at ``sh.at``) ended was, if
    known: from that allocation where the revert undoes it too (the newest of the address
    before ``ev``: an address is allocated again only after a deallocation), else as the
    client read it from the log (``owners``). Not trusted for safety: the caller checks it
    against the network (:func:`project_back`)."""
    for seq, a in sh.allocations.get((ev.network_id, ev.address), ()):
        if seq < sh.at:
            return Owner(a.project) if (a.instance, a.mac) == (ev.instance, ev.mac) else None
    if sh.at in sh.owners:
        return Owner(sh.owners[sh.at])
    return None


def project_back(sh: OwnersView, n: NetworkState, ev: FixedIpDeallocated) -> str | None:
    """The project a *freed* address goes back to. ``FixedIpDeallocated`` records none; the
    allocation it ended does, where the client found it in the log (docs/revert.md). An
    allocation on a network a project holds is that project's, and a network changes hands
    only empty, so:

    - a network no project holds now: the allocation's project (None if it is not known);
    - a network its project has held since before the deallocation: that project (as an
      admin's allocation on it would be recorded);
    - a network its project holds only since: that project if the allocation was that
      project's too, else refused — the instance would sit on another project's segment,
      recorded as its (review hrev10)."""
    now = sh.project_of(n)
    owner = allocation_owner(sh, ev)
    if now is None:
        return owner.project if owner is not None else None
    since = sh.project_since(n)
    if since <= sh.at or (owner is not None and owner.project == now):
        return now
    if owner is None:
        why = (
            f"which does not record {ev.instance}'s project: re-allocated, {ev.instance} would"
            f" be recorded as {now}'s, on {now}'s network"
        )
    else:
        was = f"project {owner.project}'s" if owner.project is not None else "no project's"
        why = f"and {ev.instance} was {was}: re-allocated, it would be on {now}'s network"
    raise Refused(
        f"network {n.network_id} is project {now}'s only since #{since}, after this"
        f" deallocation, {why}"
    )
