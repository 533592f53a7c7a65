"""The executor's DHCP state dir may hold files that are not its own (found by review hrev71).

A ``--state-dir`` shared with other programs (``/run``, ``/var/run``: the place pid files live)
holds their pid files. The executor took every ``<name>.pid`` there for a dnsmasq of its own:
one naming no live dnsmasq of ours was a dnsmasq found gone, stopped — its pid, log, leases
files deleted — and logged as ``HostDhcpStopped`` of a bridge ``<name>``. A bridge of ours is
one whose host entries the executor wrote (``<bridge>.hostsdir``, before any start; ``.hosts``
for a dnsmasq of an older version), or whose pid file names a dnsmasq of ours.

Real files, no dnsmasq: what runs is what the pid files name (this process, not a dnsmasq).
"""

from __future__ import annotations

import os
from pathlib import Path

from netledger.executor.dhcp import DhcpBook, DhcpPaths, Dnsmasq
from netledger.executor.model import HostActual, StopDhcp


def test_a_pid_file_not_of_our_dnsmasq_is_left_alone(tmp_path: Path) -> None:
    foreign = {"sshd.pid": f"{os.getpid()}\n", "sshd.log": "x\n", "crond.pid": "1\n"}
    for name, text in foreign.items():
        (tmp_path / name).write_text(text)
    dnsmasq = Dnsmasq(DhcpPaths(str(tmp_path)), None, "#!/bin/sh\n")
    assert dnsmasq.read() == ()
    assert dnsmasq.reconcile([], HostActual(), DhcpBook("h")) == []
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == foreign


def test_a_dead_dnsmasq_of_ours_is_still_stopped(tmp_path: Path) -> None:
    """Its host entries are there (written before its start): its files are cleaned up."""
    (tmp_path / "br1.hostsdir").mkdir()
    (tmp_path / "br1.hostsdir" / "02:16:3e:00:00:01,vm,10.0.0.2").write_text("x\n")
    (tmp_path / "br1.pid").write_text(f"{os.getpid()}\n")  # not a dnsmasq: it died
    (tmp_path / "br1.leases").write_text("")
    dnsmasq = Dnsmasq(DhcpPaths(str(tmp_path)), None, "#!/bin/sh\n")
    [(result, pid)] = dnsmasq.reconcile([], HostActual(), DhcpBook("h"))
    assert result.ok and pid is None
    assert result.op == StopDhcp(bridge="br1", pid=None, network_id=None, reason="stale")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
