"""A dnsmasq's host entries: a directory (``--dhcp-hostsdir``), one file per entry.

Why a directory, not one hosts file: dnsmasq reads a file added to it at once (inotify), no
signal needed. A SIGHUP (the hosts file's only reload) makes dnsmasq run the lease script
(``old``) for every lease it holds: at each allocation on the bridge, N ``netledger``
processes and requests, one after the other, ahead of the next real lease (review hrev19).

Taking an entry out is another matter: dnsmasq forgets a host only on SIGHUP (or a restart),
and it refuses a new entry whose address a forgotten one still names ("duplicate dhcp-host
IP address"). So an entry taken out (an address released or freed, a changed entry) still
costs the SIGHUP; :func:`sync` says when one is due.

Each file is named by its entry (``<mac>,<hostname>[,<ipv4>][,[<ipv6>]]``) and holds it, so:
the set of names is the set of entries (their digest needs no read); a changed entry is a new
name, never a file changed under dnsmasq; and the MAC an address was given to is found by
listing (:func:`mac_of`). An entry taken out is first renamed to a dotfile (``.gone-...``,
which dnsmasq skips) and deleted once the SIGHUP is sent: a reload cut short between the two
(a crash) leaves it there, and the next one signals.

No import beyond the standard library (and executor/leasemarks.py, likewise): ``netledger
dhcp-event`` (a process per lease) uses :func:`mac_of`.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Protocol

from . import leasemarks

#: the directory's suffix in the state dir: ``<bridge>.hostsdir``
KIND = "hostsdir"
#: an entry taken out, kept until dnsmasq was told to forget it (dnsmasq skips dotfiles)
GONE = ".gone-"
#: the lease script's variable naming the state dir: ``netledger dhcp-event`` finds there the
#: MAC of a DHCPv6 lease dnsmasq gives none for (:func:`mac_of`)
STATE_DIR_ENV = "NETLEDGER_DHCP_STATE_DIR"


class HostEntry(Protocol):
    @property
    def mac(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def address6(self) -> str | None: ...


def entry(h: HostEntry) -> str:
    """A dhcp-host entry: ``<mac>,<hostname>,<ipv4>``, the DHCPv6 address in brackets after
    it (or alone on an IPv6-only network): one entry serves both protocols."""
    fields = [h.mac, h.hostname]
    if h.address is not None:
        fields.append(h.address)
    if h.address6 is not None:
        fields.append(f"[{h.address6}]")
    return ",".join(fields)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entries_digest(entries: Iterable[str]) -> str:
    """The digest of a set of entries (in any order)."""
    return digest("".join(f"{e}\n" for e in sorted(entries)))


def listed(path: str) -> list[str] | None:
    """The entries in the directory (None: no directory)."""
    try:
        return [n for n in os.listdir(path) if not n.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_digest(path: str) -> str | None:
    names = listed(path)
    return None if names is None else entries_digest(names)


def write_atomic(path: str, text: str, mode: int) -> None:
    """Replace ``path`` whole: dnsmasq never reads half a file (it skips the dotfile)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            # mkstemp makes 0600; dnsmasq reads its hosts after dropping root.
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sync(path: str, entries: Iterable[str], fresh: bool = False, marks: str | None = None) -> bool:
    """Make the directory hold ``entries``; whether dnsmasq must be told to forget some (a
    SIGHUP, then :func:`forget`). ``fresh``: no dnsmasq reads it yet (a start): what is not
    wanted is deleted at once. ``marks``: the lease script's record (executor/leasemarks.py),
    where the addresses of the entries taken out lose their marks, before dnsmasq is told:
    a lease it keeps of one (a changed entry) is reported afresh at the SIGHUP."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    os.chmod(path, 0o755)  # dnsmasq lists it after dropping root
    want = set(entries)
    names = os.listdir(path)
    for n in names:
        if n.startswith(".tmp-"):  # a write cut short
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, n))
    gone = [n for n in names if n.startswith(GONE)]
    for n in names:
        if n.startswith(".") or n in want:
            continue
        # Taken out: dnsmasq holds the entry until a SIGHUP.
        os.replace(os.path.join(path, n), os.path.join(path, GONE + n))
        gone.append(GONE + n)
    if marks is not None and gone:
        # every entry not yet forgotten: one taken out by a reload cut short too
        leasemarks.unmark(marks, (a for n in gone for a in leasemarks.addresses(n[len(GONE) :])))
    have = set(names)
    for e in sorted(want - have):
        write_atomic(os.path.join(path, e), f"{e}\n", 0o644)
    if fresh:
        forget(path)
        return False
    return bool(gone)


def forget(path: str) -> None:
    """Delete the entries taken out (once dnsmasq was told: SIGHUP, or started afresh)."""
    for n in os.listdir(path):
        if n.startswith(GONE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, n))


def drop(path: str, marks: str | None = None) -> None:
    """Delete the directory (its dnsmasq stopped, its leases with it); the addresses of its
    entries lose their marks (``marks``: :func:`sync`)."""
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if marks is not None:
        given = (n.removeprefix(GONE) for n in names if not n.startswith(".tmp-"))
        leasemarks.unmark(marks, (a for n in given for a in leasemarks.addresses(n)))
    shutil.rmtree(path, ignore_errors=True)


def mac_of(state_dir: str, address: str) -> str | None:
    """The MAC of the host entry giving ``address`` in any dnsmasq's directory of
    ``state_dir`` (None: none, or more than one MAC). An entry taken out but not yet
    forgotten counts: dnsmasq may still serve it."""
    try:
        want = ipaddress.ip_address(address)
        dirs = [n for n in os.listdir(state_dir) if n.endswith(f".{KIND}")]
    except (ValueError, OSError):
        return None
    macs = set()
    for d in dirs:
        try:
            names = os.listdir(os.path.join(state_dir, d))
        except OSError:
            continue
        for n in names:
            if n.startswith(".tmp-"):
                continue
            fields = n.removeprefix(GONE).split(",")
            if any(_is(f.strip("[]"), want) for f in fields[2:]):
                macs.add(fields[0].lower())
    return macs.pop() if len(macs) == 1 else None


def _is(text: str, want: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == want
    except ValueError:
        return False
