"""An instance id that is a dnsmasq dhcp-host keyword ("ignore", "infinite") became a directive,
not a host name, in the hosts file the executor renders: dnsmasq refused that instance DHCP
(ignore) or gave it a lease that never ends (infinite), so its release never came. Real
dnsmasq and busybox udhcpc in namespaces this test creates and deletes. Found by review."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from netledger.events.commands import parse_command
from netledger.executor import hostsdir
from netledger.executor.dhcp import DhcpPaths, dnsmasq_argv, host_entries, render_hosts
from netledger.executor.fragments import hostname_for
from netledger.executor.model import DhcpHost, DhcpSpec, DhcpSubnet
from tests.conftest import needs_root

MAC = "02:16:3e:00:00:01"


def sh(*a: str) -> None:
    subprocess.run(a, check=True, capture_output=True, timeout=30)


def _dhcp(instance: str, d: str) -> tuple[str, str]:
    # the id is accepted by the command parser
    parse_command("fixed_ip.allocate", {"args": {"instance": instance, "network_id": "1"}})
    tag = uuid.uuid4().hex[:6]
    srv, cli = f"nl-kw-s-{tag}", f"nl-kw-c-{tag}"
    os.chmod(d, 0o755)
    spec = DhcpSpec(
        bridge="br0",
        network_id="1",
        subnets=(DhcpSubnet("1", "10.77.0.1", "255.255.255.0", "10.77.0.0", 256),),
        hosts=(DhcpHost(MAC, hostname_for(instance), "10.77.0.10"),),
        lease_time=120,
    )
    hosts = render_hosts(spec)
    argv = [a for a in dnsmasq_argv(spec, DhcpPaths(d)) if not a.startswith("--dhcp-script")]
    pidfile = os.path.join(d, "br0.pid")
    try:
        sh("ip", "netns", "add", srv)
        sh("ip", "netns", "add", cli)
        sh("ip", "-n", srv, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", srv, "link", "set", "br0", "up")
        sh("ip", "-n", srv, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", cli)
        sh("ip", "-n", srv, "link", "set", "v0", "master", "br0")
        sh("ip", "-n", srv, "link", "set", "v0", "up")
        sh("ip", "-n", srv, "addr", "add", "10.77.0.1/24", "dev", "br0")
        sh("ip", "-n", cli, "link", "set", "v1", "address", MAC)
        sh("ip", "-n", cli, "link", "set", "v1", "up")
        hostsdir.sync(os.path.join(d, "br0.hostsdir"), host_entries(spec), fresh=True)
        sh("ip", "netns", "exec", srv, *argv)
        time.sleep(0.5)
        p = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                cli,
                "busybox",
                "udhcpc",
                "-i",
                "v1",
                "-n",
                "-q",
                "-t",
                "3",
                "-T",
                "1",
                "-s",
                "/bin/true",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return hosts, p.stdout + p.stderr
    finally:
        try:
            pid = int(open(pidfile).read().strip())
            if "dnsmasq" in open(f"/proc/{pid}/cmdline").read():
                os.kill(pid, 15)
        except (OSError, ValueError):
            pass
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.parametrize("instance", ["vm-a", "ignore", "infinite", "IGNORE"])
def test_instance_name_is_a_hostname_not_a_directive(instance: str) -> None:
    needs_root()
    # not pytest's tmp_path: dnsmasq drops to nobody and must reach the hosts file
    d = tempfile.mkdtemp(prefix="nl-kw-")
    try:
        hosts, out = _dhcp(instance, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert "lease of 10.77.0.10 obtained" in out, (hosts, out)
    assert "lease time 120" in out, (hosts, out)
