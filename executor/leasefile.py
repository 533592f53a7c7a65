"""dnsmasq's lease file, read: the leases no host entry gives any more (pure).

An address freed without its client's release (the reaper, a reclaim) keeps the old client's
lease — a day by default — and dnsmasq will not hand the address to the next instance
allocated it; the executor has dnsmasq drop those (executor/dhcp.py ``_release_stale``:
``dhcp_release``, ``dhcp_release6``). A lease still held (a deallocated address not yet
released) keeps its entry, so it is never among them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from .model import DhcpSpec


def stale_leases(leases: str, spec: DhcpSpec) -> list[tuple[str, str]]:
    """The IPv4 leases of a dnsmasq lease file (``expiry mac address hostname client-id`` per
    line) whose (MAC, address) no host entry of ``spec`` gives: (mac, address) each."""
    wanted = {(h.mac.lower(), h.address) for h in spec.hosts if h.address is not None}
    out = []
    for line in leases.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] == "duid" or ":" in parts[2]:
            continue  # the DUID line, IPv6 leases (an IAID, not a MAC, in the second field)
        mac, address = parts[1].lower(), parts[2]
        if (mac, address) not in wanted:
            out.append((mac, address))
    return out


def stale_leases6(
    leases: str, spec: DhcpSpec, seen: Callable[[str, str], str | None] | None = None
) -> list[tuple[str, str, str, str]]:
    """The DHCPv6 leases of a dnsmasq lease file (``duid SERVER-ID`` once, then ``expiry iaid
    address hostname client-id`` per lease) that no host entry of ``spec`` gives: (server id,
    client id, iaid, address) each, what ``dhcp_release6`` asks for.

    The file keeps no MAC for an IPv6 lease: a lease is stale when no entry gives its
    address, or when its client's DUID names a MAC (DUID-LLT, DUID-LL: the MAC the client
    made it from) other than the entry's — unless dnsmasq saw that client with the entry's MAC
    (``seen(address, duid)``: the lease script's record, executor/leasemarks.py). A device uses
    one DUID on all its interfaces, made from any one's MAC (RFC 8415 11.2; a cloned image
    keeps its own): such a client's live lease was dropped at every reload (review hrev71).
    A DUID naming none (DUID-EN, DUID-UUID) on an address an entry gives is kept: nothing says
    it is not that entry's client. A temporary address (IAID ``T...``) or a lease without
    client id cannot be released: left."""
    wanted = {}
    for h in spec.hosts:
        if h.address6 is not None:
            wanted[ipaddress.ip_address(h.address6)] = h.mac.lower()
    server = None
    out = []
    for line in leases.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "duid":
            server = parts[1]
            continue
        if len(parts) < 5 or ":" not in parts[2] or not parts[1].isdigit() or parts[4] == "*":
            continue  # IPv4, a temporary address, no client id
        try:
            address = ipaddress.ip_address(parts[2])
        except ValueError:
            continue
        mac = wanted.get(address)
        named = duid_mac(parts[4])
        if mac is None or (
            named not in (None, mac) and (seen is None or seen(parts[2], parts[4]) != mac)
        ):
            out.append((parts[4], parts[1], parts[2]))
    if server is None:
        return []  # no server id: dnsmasq would not take the release
    return [(server, client, iaid, address) for client, iaid, address in out]


def duid_mac(duid: str) -> str | None:
    """The Ethernet MAC a DUID was made from (DUID-LLT, type 1; DUID-LL, type 3; RFC 8415
    11.2, 11.4), colon-separated hex in and out; None for the other types."""
    try:
        raw = bytes.fromhex(duid.replace(":", ""))
    except ValueError:
        return None
    kind, hw = int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")
    if hw != 1:
        return None
    if kind == 1 and len(raw) == 14:
        mac = raw[8:]
    elif kind == 3 and len(raw) == 10:
        mac = raw[4:]
    else:
        return None
    return ":".join(f"{b:02x}" for b in mac)
