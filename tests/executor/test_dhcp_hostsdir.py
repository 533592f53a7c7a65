"""The host entries' directory (executor/hostsdir.py): when dnsmasq must be told to forget
(SIGHUP), what it reads, and the MAC of an address for a DHCPv6 lease dnsmasq gives none for.

Real files in a temporary directory; what dnsmasq itself does with them is in
test_dhcp_lease_review19.py (real dnsmasq)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from netledger.executor import hostsdir
from netledger.executor.model import DhcpHost

A = "02:16:3e:00:00:0a,vm-a,10.0.0.2,[fd00::2]"
B = "02:16:3e:00:00:0b,vm-b,10.0.0.3,[fd00::3]"
C = "02:16:3e:00:00:0c,vm-c,10.0.0.4"


def visible(d: Path) -> dict[str, str]:
    """What dnsmasq reads: every file but dotfiles, name -> text."""
    return {f.name: f.read_text() for f in d.iterdir() if not f.name.startswith(".")}


def test_an_entry_is_the_line_dnsmasq_reads() -> None:
    assert hostsdir.entry(DhcpHost("02:16:3e:00:00:0a", "vm-a", "10.0.0.2", "fd00::2")) == A
    assert hostsdir.entry(DhcpHost("m", "h", None, "fd00::9")) == "m,h,[fd00::9]"
    assert hostsdir.entry(DhcpHost("m", "h", "10.0.0.9")) == "m,h,10.0.0.9"


def test_entries_added_need_no_signal_entries_taken_out_do(tmp_path: Path) -> None:
    d = tmp_path / "br.hostsdir"
    assert hostsdir.sync(str(d), [A], fresh=True) is False
    assert visible(d) == {A: f"{A}\n"}
    assert (d.stat().st_mode & 0o777, (d / A).stat().st_mode & 0o777) == (0o755, 0o644)

    assert hostsdir.sync(str(d), [A, B]) is False  # added: dnsmasq reads it unasked
    assert visible(d) == {A: f"{A}\n", B: f"{B}\n"}

    assert hostsdir.sync(str(d), [B]) is True  # taken out: dnsmasq holds it until a SIGHUP
    assert visible(d) == {B: f"{B}\n"}
    assert (d / f"{hostsdir.GONE}{A}").exists()
    hostsdir.forget(str(d))
    assert sorted(os.listdir(d)) == [B]


def test_a_changed_entry_is_one_taken_out(tmp_path: Path) -> None:
    d = tmp_path / "br.hostsdir"
    hostsdir.sync(str(d), [A], fresh=True)
    moved = A.replace("vm-a", "vm-z")
    assert hostsdir.sync(str(d), [moved]) is True  # dnsmasq would refuse its address twice
    assert visible(d) == {moved: f"{moved}\n"}


def test_a_reload_cut_short_before_its_signal_signals_next_time(tmp_path: Path) -> None:
    d = tmp_path / "br.hostsdir"
    hostsdir.sync(str(d), [A, B], fresh=True)
    assert hostsdir.sync(str(d), [B]) is True
    # (the executor died here: no SIGHUP sent, nothing forgotten)
    assert hostsdir.sync(str(d), [B]) is True
    assert hostsdir.sync(str(d), [B, C]) is True
    hostsdir.forget(str(d))
    assert hostsdir.sync(str(d), [B, C]) is False


def test_a_start_reads_only_what_is_wanted(tmp_path: Path) -> None:
    d = tmp_path / "br.hostsdir"
    hostsdir.sync(str(d), [A, B], fresh=True)
    hostsdir.sync(str(d), [B])
    (d / ".tmp-x").write_text("half")  # a write cut short
    assert hostsdir.sync(str(d), [C], fresh=True) is False
    assert sorted(os.listdir(d)) == [C]


@given(st.lists(st.sets(st.sampled_from([A, B, C])), min_size=1, max_size=6))
def test_the_digest_on_disk_is_the_digest_of_the_entries(steps: list[set[str]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "br.hostsdir")
        assert hostsdir.read_digest(d) is None
        for i, want in enumerate(steps):
            if hostsdir.sync(d, want, fresh=i == 0):
                hostsdir.forget(d)
            assert hostsdir.read_digest(d) == hostsdir.entries_digest(want)
            assert sorted(os.listdir(d)) == sorted(want)


def test_the_mac_of_an_address(tmp_path: Path) -> None:
    hostsdir.sync(str(tmp_path / "br1.hostsdir"), [A, C], fresh=True)
    hostsdir.sync(str(tmp_path / "br2.hostsdir"), [B], fresh=True)
    (tmp_path / "br1.leases").write_text("")
    assert hostsdir.mac_of(str(tmp_path), "fd00::2") == "02:16:3e:00:00:0a"
    assert hostsdir.mac_of(str(tmp_path), "fd00:0::3") == "02:16:3e:00:00:0b"  # any spelling
    assert hostsdir.mac_of(str(tmp_path), "10.0.0.4") == "02:16:3e:00:00:0c"
    assert hostsdir.mac_of(str(tmp_path), "fd00::99") is None
    assert hostsdir.mac_of(str(tmp_path), "not an address") is None
    assert hostsdir.mac_of(str(tmp_path / "missing"), "fd00::2") is None


def test_no_mac_when_two_entries_give_the_address(tmp_path: Path) -> None:
    """The address taken out from one MAC and given to another, dnsmasq not yet told: the
    release may be the old lease's; no guess."""
    d = tmp_path / "br.hostsdir"
    hostsdir.sync(str(d), [A], fresh=True)
    again = "02:16:3e:00:00:0f,vm-f,10.0.0.2,[fd00::2]"
    assert hostsdir.sync(str(d), [again]) is True
    assert hostsdir.mac_of(str(tmp_path), "fd00::2") is None
    hostsdir.forget(str(d))
    assert hostsdir.mac_of(str(tmp_path), "fd00::2") == "02:16:3e:00:00:0f"
