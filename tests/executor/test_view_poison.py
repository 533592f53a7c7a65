"""The executor's view skips what the fold refuses as the service does (events/state.py
``fold_message``): an undecodable message, an event whose values the fold cannot take —
never an exception into its follower (which would stop the executor's reading for good)."""

from __future__ import annotations

import msgpack

from netledger.events.codec import SYSTEM, Envelope, decode, encode
from netledger.events.errors import DecodeError
from netledger.events.types import NetworkCreated
from netledger.executor.view import HostView


def _bad_network() -> bytes:
    ev = NetworkCreated(
        network_id="7", label="x", cidr="10.7.0.0/24", netmask="255.255.255.0",
        gateway="10.8.0.1", broadcast="10.7.0.255", dhcp_start="10.7.0.2", mode="vxlan",
        vlan=None, vni=7, bridge="br7", bridge_interface=None, dns1=None, dns2=None,
        vpn_private_address=None, vpn_public_port=None, project=None, multi_host=True,
        network_host=None, mtu=None, cidr_v6=None, gateway_v6=None, ipv6_mode=None,
    )  # fmt: skip
    return encode(Envelope(ev, "e", "c", 1.0, SYSTEM))


def test_the_view_skips_what_the_fold_refuses() -> None:
    view = HostView(None, "h1")  # type: ignore[arg-type]  # folds only
    env = decode(_bad_network())  # decodes; its gateway lies outside its network
    view._on_message(1, "netledger.evt.registry", env, None, None)  # type: ignore[arg-type]
    assert "7" not in view.state.networks
    assert view.state.seq_of("netledger.evt.registry") == 1
    err = DecodeError("not msgpack: FormatError")
    view._on_message(2, "netledger.evt.network.7", None, err, None)  # type: ignore[arg-type]
    assert view.state.seq_of("netledger.evt.network.7") == 2
    typed = msgpack.unpackb(_bad_network())
    typed["data"]["cidr"] = True
    try:
        decode(msgpack.packb(typed))
    except DecodeError as exc:
        assert "cidr is bool" in exc.message
    else:
        raise AssertionError("a bool cidr decoded")
