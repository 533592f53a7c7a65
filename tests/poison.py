"""A stored ``NetworkCreated`` as a writer could have put it on the stream, any field changed
(the poison-event tests of the fold, the service and the executor's view)."""

from __future__ import annotations

from typing import Any

import msgpack

from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.types import NetworkCreated


def stored_network_created(**changes: Any) -> bytes:
    """Network 77 (10.77.0.0/24, VXLAN 7777) as stored, with ``changes`` made to its data —
    after encoding, so that they may break what the event class would allow."""
    ev = NetworkCreated(
        network_id="77", label="poison", cidr="10.77.0.0/24", netmask="255.255.255.0",
        gateway="10.77.0.1", broadcast="10.77.0.255", dhcp_start="10.77.0.2", mode="vxlan",
        vlan=None, vni=7777, bridge="br77", bridge_interface=None, dns1=None, dns2=None,
        vpn_private_address=None, vpn_public_port=None, project=None, multi_host=False,
        network_host=None, mtu=None, cidr_v6=None, gateway_v6=None, ipv6_mode=None,
    )  # fmt: skip
    obj = msgpack.unpackb(encode(Envelope(ev, "poison:0", "poison", 1.0, SYSTEM)))
    obj["data"].update(changes)
    return bytes(msgpack.packb(obj))
