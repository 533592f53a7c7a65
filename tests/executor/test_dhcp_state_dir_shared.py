"""A DHCP state dir others may write to is refused, and left as it is: dnsmasq runs the lease
script kept there as root and serves the host entries kept there, so a world-writable folder
(``--state-dir /tmp``) would let anyone plant either — and the executor chmod'ed whatever it
was given to 0755 (/tmp lost its sticky bit and its world-write; found by review)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from netledger.executor.dhcp import DhcpFailed, DhcpPaths, Dnsmasq


def test_a_world_writable_state_dir_is_refused_and_not_changed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # as /tmp
    dnsmasq = Dnsmasq(DhcpPaths(str(shared)), None, "#!/bin/sh\n")
    with pytest.raises(DhcpFailed, match="writable by others"):
        dnsmasq._prepare()
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert os.listdir(shared) == []  # no script written


def test_a_private_state_dir_is_opened_to_dnsmasq_for_reading() -> None:
    # (under /tmp itself: pytest's own folders are not searchable by others, which the
    # executor refuses too — dnsmasq drops root to nobody)
    own = tempfile.mkdtemp(prefix="nld-own-", dir="/tmp")
    try:
        os.chmod(own, 0o700)
        Dnsmasq(DhcpPaths(own), None, "#!/bin/sh\n")._prepare()
        assert stat.S_IMODE(os.stat(own).st_mode) == 0o755  # dnsmasq must read it
    finally:
        shutil.rmtree(own)
