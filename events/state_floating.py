"""A floating-IP pool as the fold keeps it (:class:`PoolState`) and each address it handed out;
the fold's floating-IP handlers (:class:`FloatingFold`, a mixin of the fold).

Each pool's free addresses are offsets in its range (:func:`pool_offsets`: network and broadcast
left out, unless the range is too small to have them). The fold
(:class:`~netledger.events.state.State`) changes them; the deciders only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import netaddr

from .state_offsets import OffsetPool, ip_int_of
from .types import (
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    FloatingPoolCreated,
)


@dataclass
class FloatingIp:
    address: str
    pool: str
    project: str
    fixed_address: str | None = None
    network_id: str | None = None
    instance: str | None = None


@dataclass
class PoolState:
    created: FloatingPoolCreated
    ipnet: netaddr.IPNetwork
    pool: OffsetPool
    seq: int = 0
    floating: dict[str, FloatingIp] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.created.pool

    def offset(self, address: str) -> int:
        return ip_int_of(address, self.ipnet.version) - int(self.ipnet.network)

    def offset_in(self, address: str) -> int:
        """:meth:`offset` of an address that must be in the pool's range (else ValueError)."""
        offset = self.offset(address)
        if not 0 <= offset < self.ipnet.size:
            raise ValueError(f"{address} is not in pool {self.name} ({self.ipnet})")
        return offset

    def address(self, offset: int) -> str:
        return str(netaddr.IPAddress(int(self.ipnet.network) + offset, self.ipnet.version))


def pool_offsets(ipnet: netaddr.IPNetwork) -> OffsetPool:
    if ipnet.size <= 2:
        return OffsetPool(0, ipnet.size - 1, frozenset())
    return OffsetPool(1, ipnet.size - 2, frozenset())


class FloatingFold:
    """The floating-IP handlers of the fold (a mixin of :class:`~netledger.events.state.State`,
    named in its dispatch table); the field is its."""

    pools: dict[str, PoolState]

    def _pool(self, pool: str, seq: int) -> PoolState | None:
        p = self.pools.get(pool)
        if p is not None:
            p.seq = seq
        return p

    def _floating_allocated(self, ev: FloatingIpAllocated, seq: int) -> None:
        p = self.pools.get(ev.pool)
        if p is not None:
            offset = p.offset_in(ev.address)  # checked before anything changes
            p.seq = seq
            p.pool.take(offset)
            p.floating[ev.address] = FloatingIp(ev.address, ev.pool, ev.project)

    def _floating_associated(self, ev: FloatingIpAssociated, seq: int) -> None:
        p = self._pool(ev.pool, seq)
        if p is not None and ev.address in p.floating:
            f = p.floating[ev.address]
            f.fixed_address, f.network_id, f.instance = ev.fixed_address, ev.network_id, ev.instance

    def _floating_disassociated(self, ev: FloatingIpDisassociated, seq: int) -> None:
        p = self._pool(ev.pool, seq)
        if p is not None and ev.address in p.floating:
            f = p.floating[ev.address]
            f.fixed_address = f.network_id = f.instance = None

    def _floating_deallocated(self, ev: FloatingIpDeallocated, seq: int) -> None:
        p = self._pool(ev.pool, seq)
        if p is not None and p.floating.pop(ev.address, None) is not None:
            p.pool.release(p.offset(ev.address))

    def find_floating(self, address: str) -> tuple[PoolState, FloatingIp | None] | None:
        ip = netaddr.IPAddress(address)
        for p in self.pools.values():
            if ip in p.ipnet:
                return p, p.floating.get(address)
        return None
