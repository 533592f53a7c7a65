"""The lease script's marks (executor/leasemarks.py): the shell wrapper run by the real
``/bin/sh`` with dnsmasq's arguments and environment, and the executor taking marks away with
the entries it takes out (real files). What dnsmasq does with them is in
test_dhcp_lease_marks_netns.py (real dnsmasq, udhcpc, command service).

The wrapper's command here is a stand-in that records its arguments and exits as told: what
counts is whether the wrapper ran it, and what it left.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from netledger.executor import hostsdir, leasemarks
from netledger.executor.dhcp import script_text

M = "02:16:3e:00:00:0a"
A = f"{M},vm-a,10.0.0.2,[fd00::2]"
B = "02:16:3e:00:00:0b,vm-b,10.0.0.3"


class Script:
    def __init__(self, tmp: Path) -> None:
        self.marks = tmp / "reported"
        self.marks.mkdir()
        self.calls = tmp / "calls"
        cmd = tmp / "cmd"
        cmd.write_text(f'#!/bin/sh\necho "$*" >> {self.calls}\nexit "${{RC:-0}}"\n')
        cmd.chmod(0o755)
        self.path = tmp / "dhcp-script"
        self.path.write_text(script_text([str(cmd)], {"K": "v"}, None, str(self.marks)))
        self.path.chmod(0o700)

    def __call__(
        self, *args: str, expires: str | None = "1000", rc: int = 0, mac: str | None = None
    ) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DNSMASQ_")}
        if expires is not None:
            env["DNSMASQ_LEASE_EXPIRES"] = expires
        if mac is not None:  # a DHCPv6 lease whose client's MAC dnsmasq knows
            env["DNSMASQ_MAC"] = mac
        env["RC"] = str(rc)
        return subprocess.run([str(self.path), *args], env=env, check=False).returncode

    def ran(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def mark(self, address: str) -> str | None:
        p = self.marks / address
        return p.read_text() if p.exists() else None


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return Script(tmp_path)


def test_an_old_already_reported_runs_nothing(script: Script) -> None:
    assert script("add", M, "10.0.0.2", "vm-a") == 0
    assert script.mark("10.0.0.2") == f"{M} 1000\n"
    assert script("old", M, "10.0.0.2", "vm-a") == 0  # a SIGHUP, a restart: same lease
    assert script.ran() == [f"dhcp-event add {M} 10.0.0.2 vm-a"]


def test_a_lease_not_reported_runs_until_it_is(script: Script) -> None:
    assert script("add", M, "10.0.0.2", rc=1) == 1  # no command service
    assert script.mark("10.0.0.2") is None
    assert script("old", M, "10.0.0.2", rc=1) == 1
    assert script("old", M, "10.0.0.2") == 0
    assert script("old", M, "10.0.0.2") == 0
    assert len(script.ran()) == 3 and script.mark("10.0.0.2") == f"{M} 1000\n"


def test_a_renewal_or_another_client_runs(script: Script) -> None:
    script("add", M, "10.0.0.2")
    script("old", M, "10.0.0.2", expires="1500")  # renewed: a new expiry
    assert script.mark("10.0.0.2") == f"{M} 1500\n"
    script("old", "02:16:3e:00:00:0b", "10.0.0.2", expires="1500")  # another MAC
    script("add", M, "10.0.0.2", expires="1500")  # an add always runs
    assert len(script.ran()) == 4


def test_a_release_takes_the_mark_even_when_it_fails(script: Script) -> None:
    script("add", M, "10.0.0.2")
    assert script("del", M, "10.0.0.2", rc=1) == 1
    assert script.mark("10.0.0.2") is None
    script("old", M, "10.0.0.2")
    assert [r.split()[1] for r in script.ran()] == ["add", "del", "old"]


def test_no_expiry_no_mark_every_event_runs(script: Script) -> None:
    """A dnsmasq without RTC (DNSMASQ_LEASE_LENGTH only) cannot tell a renewal: no skip."""
    script("add", M, "10.0.0.2", expires=None)
    script("old", M, "10.0.0.2", expires=None)
    assert len(script.ran()) == 2 and script.mark("10.0.0.2") is None


def test_ipv6_leases_and_other_actions(script: Script) -> None:
    duid = "00:03:00:01:02:16:3e:00:00:0a"
    script("old", duid, "fd00::2")
    script("old", duid, "fd00::2")
    assert script.mark("fd00::2") == f"{duid} 1000\n"
    script("tftp", "1", "/x/../y")  # not a lease: passed on, nothing written
    script("old", M, "../escape")
    assert len(script.ran()) == 3
    assert sorted(os.listdir(script.marks)) == ["fd00::2"]


def test_a_dhcpv6_leases_client_as_dnsmasq_saw_it(script: Script) -> None:
    """``<address>.client``: the DUID and the MAC dnsmasq gave (DNSMASQ_MAC), what tells the
    executor's stale-lease sweep whose the lease is (the lease file keeps no MAC); kept by a
    lease read back without its MAC, taken by the release (review hrev71)."""
    duid, marks = "00:03:00:01:02:16:3e:77:77:77", str(script.marks)
    assert script("add", duid, "fd00::2", "vm-a", rc=1, mac=M) == 1  # even when not reported
    assert script.mark("fd00::2.client") == f"{duid} {M}\n"
    assert leasemarks.client_mac(marks, "fd00::2", duid) == M
    assert leasemarks.client_mac(marks, "fd00::2", "00:03:00:01:02:16:3e:00:00:0b") is None
    script("old", duid, "fd00::2", expires="1500")  # read back after a restart: no MAC
    script("old", duid, "fd00::2", expires="1500", mac=M)  # skipped, the record stays
    assert script.mark("fd00::2.client") == f"{duid} {M}\n"
    assert len(script.ran()) == 2
    script("add", M, "10.0.0.2")  # IPv4: its MAC is in the lease file, no record
    assert script.mark("10.0.0.2.client") is None
    script("del", duid, "fd00::2")
    assert script.mark("fd00::2.client") is None and script.mark("fd00::2") is None
    assert leasemarks.client_mac(marks, "fd00::2", duid) is None


def test_entries_taken_out_lose_their_marks(tmp_path: Path) -> None:
    marks, d = tmp_path / "reported", tmp_path / "br.hostsdir"
    marks.mkdir()
    for a in ("10.0.0.2", "fd00::2", "10.0.0.3", "10.0.0.9"):
        (marks / a).write_text("x 1\n")
    hostsdir.sync(str(d), [A, B], fresh=True, marks=str(marks))
    assert len(os.listdir(marks)) == 4  # nothing taken out

    assert hostsdir.sync(str(d), [B], marks=str(marks)) is True
    assert sorted(os.listdir(marks)) == ["10.0.0.3", "10.0.0.9"]
    (marks / "10.0.0.2").write_text("x 2\n")  # (reported again meanwhile)
    # a reload cut short before its SIGHUP: the next one unmarks again, then signals
    assert hostsdir.sync(str(d), [B], marks=str(marks)) is True
    assert sorted(os.listdir(marks)) == ["10.0.0.3", "10.0.0.9"]

    hostsdir.drop(str(d), str(marks))  # dnsmasq stopped, its leases gone
    assert not d.exists() and sorted(os.listdir(marks)) == ["10.0.0.9"]
    hostsdir.drop(str(d), str(marks))  # no directory: nothing


def test_a_mark_is_found_in_any_spelling(tmp_path: Path) -> None:
    (tmp_path / "fd00::2").write_text("x 1\n")
    (tmp_path / "junk").write_text("")
    leasemarks.unmark(str(tmp_path), ["fd00:0:0:0::2", "not an address"])
    assert os.listdir(tmp_path) == ["junk"]
    assert leasemarks.addresses(A) == ["10.0.0.2", "fd00::2"]
    assert leasemarks.addresses("m,h,[fd00::9]") == ["fd00::9"]
