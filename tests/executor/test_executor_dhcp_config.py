"""DHCP, the pure part: what dnsmasq should serve and how it is run.

The desired dnsmasq specs folded from the log (which networks this host serves, which hosts,
flat networks sharing a bridge sharing one dnsmasq), dnsmasq's command line, instance host names
as DNS labels, and the lease script that calls ``netledger dhcp-event`` in the executor's
namespace.
"""

from __future__ import annotations

import pytest

from netledger.events.codec import Envelope
from netledger.events.state import State
from netledger.events.types import Event, FixedIpAllocated, FixedIpDeallocated, FixedIpLeased
from netledger.executor.desired import HostConfig, build, hostname_for
from netledger.executor.dhcp import DhcpPaths, dnsmasq_argv, script_text
from netledger.executor.hosts import HostBook
from netledger.executor.model import DhcpHost, DhcpSubnet

from .test_executor_desired import network


def _fold(*events: Event) -> State:
    st = State()
    for seq, ev in enumerate(events, 1):
        st.apply(seq, ev.subject(), Envelope(ev, f"e{seq}", f"c{seq}", 0.0))
    return st


def _alloc(nid: str, addr: str, inst: str, host: str) -> FixedIpAllocated:
    mac = f"02:16:3E:00:00:{int(addr.rsplit('.', 1)[1]):02x}"
    return FixedIpAllocated(
        network_id=nid, address=addr, instance=inst, mac=mac, host=host, project=None
    )


def test_desired_dhcp_lists_bound_addresses_of_served_dhcp_networks() -> None:
    held = _alloc("1", "10.0.1.4", "gone", "c1")
    freed = _alloc("1", "10.0.1.5", "freed", "c1")
    st = _fold(
        network("1", "10.0.1.0/24", "flat_dhcp", bridge="br100", dns1="192.0.2.1"),
        network("2", "10.0.2.0/24", "flat", bridge="brflat"),
        network("3", "10.0.3.0/24", "vxlan", vni=7, bridge="brvx7", multi_host=True),
        _alloc("1", "10.0.1.3", "vm_B", "c2"),
        _alloc("1", "10.0.1.2", "42", "c1"),
        held,
        FixedIpLeased(network_id="1", address=held.address, mac=held.mac, instance="gone"),
        FixedIpDeallocated(
            network_id="1",
            address=held.address,
            instance="gone",
            mac=held.mac,
            host="c1",
            freed=False,
        ),
        freed,
        FixedIpDeallocated(
            network_id="1",
            address=freed.address,
            instance="freed",
            mac=freed.mac,
            host="c1",
            freed=True,
        ),
        _alloc("2", "10.0.2.2", "flatvm", "c1"),
        _alloc("3", "10.0.3.2", "mine", "c1"),
        _alloc("3", "10.0.3.3", "theirs", "c2"),
    )
    cfg = HostConfig(host="c1", network_host=True, dhcp_lease_time=600)
    d = build(st, HostBook("c1"), cfg)
    assert [s.bridge for s in d.dhcp] == ["br100", "brvx7"]  # plain flat: no DHCP
    br100, brvx7 = d.dhcp
    assert br100.subnets == (
        DhcpSubnet("1", "10.0.1.1", "255.255.255.0", "10.0.1.2", 256, ("192.0.2.1",)),
    )
    # Every host's instances (not multi-host); the held address too; MACs lower case; names
    # start with a letter.
    assert br100.hosts == (
        DhcpHost("02:16:3e:00:00:02", "i-42", "10.0.1.2"),
        DhcpHost("02:16:3e:00:00:03", "vm-b", "10.0.1.3"),
        DhcpHost("02:16:3e:00:00:04", "gone", "10.0.1.4"),
    )
    assert br100.lease_time == 600
    # Multi-host: only this host's own instances.
    assert [h.hostname for h in brvx7.hosts] == ["mine"]
    assert (
        build(st, HostBook("c1"), HostConfig(host="c1", network_host=True, dhcp=False)).dhcp == ()
    )
    # Not serving (no network host role): nothing, except the multi-host network.
    assert [s.bridge for s in build(st, HostBook("c1"), HostConfig(host="c1")).dhcp] == ["brvx7"]


def test_flat_networks_sharing_a_bridge_share_one_dnsmasq() -> None:
    st = _fold(
        network("2", "10.0.2.0/24", "flat_dhcp", bridge="br100"),
        network("1", "10.0.1.0/24", "flat_dhcp", bridge="br100", mtu=1400),
        _alloc("1", "10.0.1.2", "a", "h"),
        _alloc("2", "10.0.2.2", "a", "h"),
    )
    [spec] = build(st, HostBook("h"), HostConfig(host="h", network_host=True)).dhcp
    assert spec.network_id == "1" and [s.network_id for s in spec.subnets] == ["1", "2"]
    # Two instances with one name: dnsmasq must never see a name twice.
    assert [h.hostname for h in spec.hosts] == ["a", "a-10-0-2-2"]
    argv = dnsmasq_argv(spec, DhcpPaths("/run/x", "/usr/sbin/dnsmasq"))
    assert argv[0] == "/usr/sbin/dnsmasq"
    for flag in (
        "--strict-order",
        "--bind-interfaces",
        "--interface=br100",
        "--except-interface=lo",
        "--listen-address=10.0.1.1",
        "--listen-address=10.0.2.1",
        "--pid-file=/run/x/br100.pid",
        "--dhcp-hostsdir=/run/x/br100.hostsdir",
        "--dhcp-leasefile=/run/x/br100.leases",
        "--dhcp-script=/run/x/dhcp-script",
        "--script-on-renewal",  # a lease the service missed reaches the log at its renewal
        "--dhcp-lease-max=512",
        "--dhcp-range=set:net1,10.0.1.2,static,255.255.255.0,86400s",
        "--dhcp-range=set:net2,10.0.2.2,static,255.255.255.0,86400s",
        "--dhcp-option=tag:net1,3,10.0.1.1",
        "--dhcp-option=tag:net2,3,10.0.2.1",
        "--dhcp-option-force=tag:net1,26,1400",
        "--no-resolv",
        "--no-hosts",
    ):
        assert flag in argv, flag
    assert not any(a.startswith("--dhcp-option=tag:net1,6") for a in argv)  # no DNS given


@pytest.mark.parametrize(
    ("instance", "name"),
    [
        ("vm-a", "vm-a"),
        ("VM_1", "vm-1"),
        ("3600", "i-3600"),
        ("__", "instance"),
        ("a" * 80, "a" * 63),
        # dnsmasq's dhcp-host keywords: no address at all, a lease that never ends (review)
        ("ignore", "i-ignore"),
        ("IGNORE", "i-ignore"),
        ("infinite", "i-infinite"),
        ("deprecated", "i-deprecated"),
        ("ignored", "ignored"),
    ],
)
def test_hostname_is_a_dns_label_starting_with_a_letter(instance: str, name: str) -> None:
    assert hostname_for(instance) == name


def test_lease_script_calls_dhcp_event_in_the_executors_namespace() -> None:
    text = script_text(
        ["/v/bin/netledger", "--nats", "nats://h:1", "--creds", "/c d"],
        {"NETLEDGER_PASSWORD": "p w"},
        "/run/x/executor.netns",
    )
    assert text.startswith("#!/bin/sh\n")
    assert "NETLEDGER_PASSWORD='p w'; export NETLEDGER_PASSWORD" in text
    assert text.rstrip().endswith(
        "exec nsenter --net=/run/x/executor.netns -- /v/bin/netledger --nats nats://h:1"
        " --creds '/c d' dhcp-event \"$@\""
    )
    assert "nsenter" not in script_text(["netledger"])
