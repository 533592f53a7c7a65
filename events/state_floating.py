"""A floating-IP pool as the fold keeps it (:class:`PoolState`) and each address it handed out.

Each pool's free addresses are offsets in its range (:func:`pool_offsets`: network and broadcast
left out, unless the range is too small to have them). The fold
(:class:`~netledger.events.state.State`) changes them; the deciders only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import netaddr

from .state_offsets import OffsetPool, ip_int_of
from .types import FloatingPoolCreated


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
