"""How much each dnsmasq re-read at SIGHUPs: past a bound, it is replaced instead.

dnsmasq (2.90, Debian's) keeps memory it never frees for every dhcp-host entry it re-reads
from its ``--dhcp-hostsdir`` at a SIGHUP: ~77 bytes an entry. Measured (a bridge of 100
entries, one taken out and one added per step, as a deallocation and an allocation): RSS 2.1
-> 9.8 MB after 1,000 SIGHUPs; with SIGHUPs only every 100 steps, 2.1 -> 2.4 MB after 3,000
steps. The executor must SIGHUP at every entry taken out (executor/hostsdir.py: dnsmasq
forgets a host no other way), so a long-lived bridge's dnsmasq grew with every instance ever
deleted on it — a day of churn on a full bridge, megabytes, for as long as the network lives.

A fresh dnsmasq starts from its baseline. :class:`Rereads` counts, per bridge, the entries its
running dnsmasq re-read at the SIGHUPs sent to it; a reload that would take the count past
:data:`REREAD_CAP` replaces the dnsmasq instead (executor/dhcp.py ``_reload``: stopped with its
leases kept, started again — what a changed command line does). A start reads the entries and
the leases once, and runs the lease script for each lease, as a SIGHUP does.

Pure: no I/O. The count lives in the executor's memory: one adopted after an executor restart
starts from 0 (it is replaced at most one cap later than it would have been).
"""

from __future__ import annotations

#: entries a dnsmasq may re-read at SIGHUPs before its next reload replaces it: ~1.5-2 MB of
#: dnsmasq 2.90's leak, 80 reloads of a bridge of 250 instances
REREAD_CAP = 20_000
#: what a SIGHUP leaks besides its entries, in entries: ~260 bytes a SIGHUP of a bridge of 2
#: (measured: 1,000 of them, 2.1 -> 2.4 MB), so a bridge of one instance is not reloaded
#: 20,000 times (~4 MB) before it is replaced
SIGHUP_COST = 2


class Rereads:
    """Per bridge: the pid of its dnsmasq and the entries it re-read at SIGHUPs (each SIGHUP
    counted :data:`SIGHUP_COST` more). One item per
    bridge whose dnsmasq was reloaded and is not stopped since (``stopped`` drops it)."""

    def __init__(self, cap: int = REREAD_CAP) -> None:
        self.cap = cap
        self._of: dict[str, tuple[int, int]] = {}

    def reload(self, bridge: str, pid: int, entries: int) -> bool:
        """Count a SIGHUP of ``pid`` making it re-read ``entries``: True. False (nothing
        counted): replace it instead. A dnsmasq not reloaded before is always reloaded, however
        many entries it has (replacing it would cost as much, and gain nothing)."""
        was, n = self._of.get(bridge, (pid, 0))
        if was != pid:  # another dnsmasq (restarted meanwhile): its own count
            n = 0
        cost = entries + SIGHUP_COST
        if n > 0 and n + cost > self.cap:
            return False
        self._of[bridge] = (pid, n + cost)
        return True

    def stopped(self, bridge: str) -> None:
        """The bridge's dnsmasq was stopped (or replaced): whatever runs next counts afresh."""
        self._of.pop(bridge, None)

    def count(self, bridge: str) -> int:
        return self._of.get(bridge, (0, 0))[1]

    def __len__(self) -> int:
        return len(self._of)
