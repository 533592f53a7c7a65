"""The host's actual state, kept current by the kernel's own notifications.

A pass used to dump and decode every link and address of the host (twice: before and after
applying), so the cost of one change grew with everything the host serves. Here a netlink
socket subscribed to the link, IPv4- and IPv6-address and neighbour groups feeds a cache in a thread of its
own, decoding only the attributes the executor uses (:mod:`.nlparse`); a pass reads the cache.

* Start: subscribe first, then dump (links, addresses, bridge flood entries) — notifications
  queued during the dump are applied after it, in order, so the cache converges.
* A notification overrun (``ENOBUFS``: the kernel dropped messages for this socket) or a
  socket error makes it dump everything again (``resyncs``), and tells the owner.
* :meth:`settle` waits until every notification queued so far is applied: after applying a
  change, the kernel has queued its notifications before acknowledging the request, so once
  settled the cache shows what was applied — no read-back dump.
* The periodic full sweep still dumps (:meth:`resync`): the safety net for anything a
  notification could have missed. It decodes again only the links, addresses and flood
  entries whose messages changed in more than counters, timers and ages since the last dump
  (executor/dumpmemo.py).

Which changes matter (our links, their addresses and flood entries; a foreign link taking a name)
is the owner's business: ``on_change`` is called from the reader thread after each batch of
notifications that changed the cache.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Container
from typing import Any, NamedTuple

from . import nlencode, nlparse
from .dumpmemo import FloodMemo, LinkMemo, SameBytes, kept_address
from .errors import ExecutorError
from .incremental import Scope, network_of
from .model import FLOOD_MAC, AddrState, LinkState, is_ours
from .netlink import RtSocket, in_netns
from .slices import ITEMS, Steps, complete, sorted_steps

log = logging.getLogger("netledger.executor.cache")

RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
AF_BRIDGE = 7
SO_RCVBUFFORCE = 33
RCVBUF = 32 << 20
#: How long the reader blocks before looking at its stop flag.
POLL_S = 0.5
#: Seconds before a failed read of the kernel after lost notifications is tried again (by the
#: reader thread), doubling up to RESYNC_RETRY_MAX_S while it keeps failing.
RESYNC_RETRY_S = 0.5
#: Dumps of each table a resync makes at most (the last one taken even if marked interrupted:
#: RtSocket.read_raw, _resync_from).
RESYNC_TRIES = 1
RESYNC_RETRY_MAX_S = 30.0
#: How many of the latest changes :attr:`KernelCache.recent` remembers (a scoped pass asks for
#: those made while it ran; older than that it takes as unknown: a look at the whole host).
RECENT = 4096


IFF_UP = 0x1


class CachedState(NamedTuple):
    links: list[LinkState]
    addresses: list[AddrState]
    fdb: list[tuple[str, str]]
    #: the cache's change count as of this state
    changes: int
    #: every link's index by name (applying needs them all, not only those in a scope)
    by_name: dict[str, int]


def _up_only(x: nlparse.Link) -> nlparse.Link:
    """Keep only the flag the executor reads: carrier and operational state change on their own
    moments after a link comes up (linkwatch), and would look like changes to react to."""
    return x._replace(flags=x.flags & IFF_UP)


def _matters(x: nlparse.Link, old: nlparse.Link | None, watched: Container[str] | None) -> bool:
    """Whether a change of link ``x`` (``old``: as it was) can matter to a pass: a link of ours
    (before or after), or one ``watched`` names (before or after: a link taking or leaving a
    name we want), or every link without ``watched``."""
    if watched is None or is_ours(x.alias) or x.name in watched:
        return True
    return old is not None and (is_ours(old.alias) or old.name in watched)


def _differences(
    links: dict[int, nlparse.Link],
    addrs: dict[tuple[int, str], nlparse.Addr],
    fdb: set[tuple[int, str]],
    links2: dict[int, nlparse.Link],
    addrs2: dict[tuple[int, str], nlparse.Addr],
    fdb2: set[tuple[int, str]],
) -> set[tuple[str | None, str | None]]:
    """The links (name, network of alias) a dump found changed from what the cache held: each
    link that differs, and the link of each address or flood entry that differs."""
    out: set[tuple[str | None, str | None]] = set()

    def link(i: int) -> None:
        for x in (links.get(i), links2.get(i)):
            if x is not None:
                out.add((x.name, network_of(x.alias)))
        if i not in links and i not in links2:
            out.add((None, None))

    for i in links.keys() | links2.keys():
        if links.get(i) != links2.get(i):
            link(i)
    for key in addrs.keys() | addrs2.keys():
        if addrs.get(key) != addrs2.get(key):
            link(key[0])
    for i, _ in fdb ^ fdb2:
        link(i)
    return out


def _discard(index: dict[int, set[str]], key: int, value: str) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]


class _Index:
    """The cache's ways in, kept with it under its lock: a link by name, the links of a
    network (by their alias), the addresses and flood entries of a link — so that a scoped
    read and a link's deletion cost what they touch, not the host's size."""

    def __init__(self) -> None:
        self.by_name: dict[str, int] = {}
        self.by_net: dict[str, set[int]] = {}
        self.addrs_of: dict[int, set[str]] = {}
        self.fdb_of: dict[int, set[str]] = {}

    @classmethod
    def of(
        cls,
        links: dict[int, nlparse.Link],
        addrs: dict[tuple[int, str], nlparse.Addr],
        fdb: set[tuple[int, str]],
    ) -> _Index:
        ix = cls()
        for x in links.values():
            ix.link_changed(None, x)
        for i, cidr in addrs:
            ix.addrs_of.setdefault(i, set()).add(cidr)
        for i, dst in fdb:
            ix.fdb_of.setdefault(i, set()).add(dst)
        return ix

    def link_changed(self, old: nlparse.Link | None, new: nlparse.Link | None) -> None:
        if old is not None:
            if old.name and self.by_name.get(old.name) == old.ifindex:
                del self.by_name[old.name]
            net = network_of(old.alias)
            if net is not None:
                members = self.by_net.get(net)
                if members is not None:
                    members.discard(old.ifindex)
                    if not members:
                        del self.by_net[net]
        if new is not None:
            if new.name:
                self.by_name[new.name] = new.ifindex
            net = network_of(new.alias)
            if net is not None:
                self.by_net.setdefault(net, set()).add(new.ifindex)


class KernelCache:
    def __init__(
        self,
        netns: str | None,
        on_change: Callable[[], None] | None = None,
        live: bool = True,
        rcvbuf: int = RCVBUF,
    ) -> None:
        self.rcvbuf = rcvbuf
        self.netns = netns
        #: False (``executor run --once``): no notifications; settling reads the kernel again
        self.live = live
        self.on_change = on_change or (lambda: None)
        #: the links not ours whose changes matter (``in``; the owner's business, e.g.
        #: :class:`.incremental.Watched`); None: every link's. A change of any other link is
        #: applied to the cache all the same, but calls no ``on_change`` and counts as none.
        self.watched: Container[str] | None = None
        self._lock = threading.Lock()
        self.links: dict[int, nlparse.Link] = {}
        self.addrs: dict[tuple[int, str], nlparse.Addr] = {}
        self.fdb: set[tuple[int, str]] = set()
        self._ix = _Index()
        #: the last dump's links, addresses and flood entries with what they were decoded
        #: from: a dump decodes only those whose messages differ in more than counters,
        #: timers and ages
        self.memo = LinkMemo(_up_only)
        self._addr_memo = SameBytes(kept_address)
        self._flood_memo = FloodMemo()
        self.notifications = 0
        #: how many times the cache changed (a pass notes it: later changes are not its own)
        self.changes = 0
        #: the latest changes: (change number, link name, network of its alias) per link a
        #: change concerned (name None: a link unknown then) — a pass scoped to a few networks
        #: asks whether any change made while it ran concerned another (:meth:`changed_outside`)
        self.recent: deque[tuple[int, str | None, str | None]] = deque(maxlen=RECENT)
        self.resyncs = 0
        #: a failed read after lost notifications: (when to try again, the wait before it)
        self._owed: tuple[float, float] | None = None
        self.overruns = 0
        self._busy = False  # the reader holds data it read but has not applied yet
        #: while a dump runs: the notifications applied meanwhile, to apply again on the dump
        self._journal: list[bytes] | None = None
        self._dumping = threading.Lock()
        self._applied = threading.Condition()  # notified after each datagram is applied
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mcast: socket.socket | None = None
        self._dumper: RtSocket | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if not self.live:
            self._dumper = RtSocket(self.netns)
            self.resync()
            return

        def make() -> socket.socket:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            try:  # root may exceed rmem_max: a big burst of our own changes must fit
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            s.bind((0, RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            s.settimeout(POLL_S)
            return s

        self._mcast = in_netns(self.netns, make)
        self._dumper = RtSocket(self.netns)
        self.resync()  # after subscribing: what changes meanwhile is queued, applied after
        self._thread = threading.Thread(
            target=self._run, name=f"netledger-cache-{self.netns or 'host'}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop reading. A running reader closes its socket itself when it sees the flag
        (within ``POLL_S``): waiting for it here held every executor's exit up for up to
        half a second."""
        self._stop.set()
        reader, self._thread = self._thread, None
        mcast, self._mcast = self._mcast, None
        if mcast is not None and (reader is None or not reader.is_alive()):
            mcast.close()
        if self._dumper is not None:
            self._dumper.close()
            self._dumper = None

    # --- reading the kernel -------------------------------------------------------------

    def resync(self) -> None:
        """Dump links, addresses and flood entries and replace the cache with them (one dump
        at a time: the reader's after an overrun and a pass's share one socket)."""
        assert self._dumper is not None
        d = self._dumper
        # What the reader applies while the dump runs is kept and applied again on the dump
        # before it replaces the cache: the dump may have read a link before a change the
        # reader applied to the old state — swapped in as it was read, the change was lost
        # (a pass's own link could vanish from the cache until the next sweep).
        with self._dumping:
            with self._lock:
                self._journal = []
            try:
                self._resync_from(d)
                self._owed = None  # (a read the reader owed: done by this one)
            finally:
                with self._lock:
                    self._journal = None

    def _resync_from(self, d: RtSocket) -> None:
        # A dump the kernel marks interrupted is taken as it is (RtSocket.read_raw, counted in
        # its ``accepted``): what changed during it is in the journal of notifications,
        # applied on it below; what a shift may have skipped unchanged (an address or flood
        # entry after one deleted meanwhile: rare) the next sweep reads. Done again, it cost
        # the sweep 2-3 times its dump's CPU under a steady stream of the executor's own
        # changes — most of a large host's dumps marked, beside the passes — with four tries,
        # still ~2x with two (bench/kernel_tail.py, 30 new networks a second at 1,200), for
        # marks nearly all of which the journal mends.
        once: dict[str, Any] = {"tries": RESYNC_TRIES, "accept_last": True}
        links = d.read_raw(nlencode.link_dump(), nlencode.RTM_GETLINK, self.memo.links, **once)
        addrs = dict(
            x
            for x in d.read_raw(
                nlencode.addr_dump(), nlencode.RTM_GETADDR, self._addr_memo.read, **once
            )
            if x is not None
        )  # v4 and v6
        fdb = {
            (n.ifindex, n.dst)
            for n in d.read_raw(
                nlencode.neigh_dump(AF_BRIDGE),
                nlencode.RTM_GETNEIGH,
                self._flood_memo.read,
                **once,
            )
            if n.dst and n.lladdr == FLOOD_MAC
        }
        ix = _Index.of(links, addrs, fdb)
        with self._lock:
            journal = self._journal or []
            self._journal = None
            differ = _differences(self.links, self.addrs, self.fdb, links, addrs, fdb)
            self.links, self.addrs, self.fdb, self._ix = links, addrs, fdb, ix
            self.resyncs += 1
            self.changes += 1
            number = self.changes
            self.recent.extend((number, name, net) for name, net in differ)
            for data in journal:  # in the order the reader applied them: ends at the newest
                self._apply_locked(data)

    def _run(self) -> None:
        assert self._mcast is not None
        sock = self._mcast
        try:
            self._read(sock)
        finally:
            sock.close()

    def _read(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            if self._owed is not None and time.monotonic() >= self._owed[0]:
                self._safe_resync()  # a read of the kernel that failed, tried again
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    log.warning("netlink notifications overran: reading the kernel again")
                    # What is queued predates the dump below: dropped. Above all the queue must
                    # have room for what changes during the dump — while it stays full the
                    # kernel drops those silently (one ENOBUFS per congestion), and the dump
                    # alone would miss them.
                    self._drain(sock)
                else:
                    log.warning("netlink notification socket: %s; reading the kernel again", exc)
                    time.sleep(0.1)
                self._safe_resync()
                continue
            self._busy = True
            try:
                if self._apply(data) and not self._stop.is_set():
                    self.on_change()
            finally:
                self._busy = False
                with self._applied:
                    self._applied.notify_all()

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            while True:
                try:
                    sock.recv(1 << 20)
                except BlockingIOError:
                    return
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        return
        finally:
            sock.settimeout(POLL_S)

    def _safe_resync(self) -> None:
        """Read the kernel again after notifications were lost; failing (its dumps marked
        interrupted by a storm of changes, the socket), tried again by the reader after
        RESYNC_RETRY_S, doubling up to RESYNC_RETRY_MAX_S — the notifications applied
        meanwhile cannot stand for the ones lost (a periodic sweep, minutes away, was the
        only other read)."""
        try:
            self.resync()
        except Exception as exc:
            wait = (
                RESYNC_RETRY_S if self._owed is None else min(2 * self._owed[1], RESYNC_RETRY_MAX_S)
            )
            self._owed = (time.monotonic() + wait, wait)
            log.warning(
                "reading the kernel after lost notifications failed (%s): again in %gs",
                exc,
                wait,
                exc_info=not isinstance(exc, ExecutorError | OSError),  # (a bug: its stack)
            )
            return
        self._owed = None
        self.on_change()

    def _apply(self, data: bytes) -> bool:
        with self._lock:
            if self._journal is not None:
                self._journal.append(data)
            return self._apply_locked(data)

    def _apply_locked(self, data: bytes) -> bool:
        from .kernel import address_kept

        changed = False
        ix = self._ix
        watched = self.watched
        touched: list[tuple[str | None, str | None]] = []
        note = touched.append
        for mtype, _flags, _seq, a, end in nlparse.messages(data):
            self.notifications += 1
            if mtype in (nlparse.RTM_NEWLINK, nlparse.RTM_DELLINK) and data[a] != 0:
                # AF_BRIDGE port messages (a port joined or left a bridge): partial views
                # of a link that goes on existing; the AF_UNSPEC message says it all.
                continue
            if mtype == nlparse.RTM_NEWLINK:
                x = _up_only(nlparse.link(data, a, end))
                old = self.links.get(x.ifindex)
                if old != x:
                    self.links[x.ifindex] = x
                    ix.link_changed(old, x)
                    if _matters(x, old, watched):
                        changed = True
                        note((x.name, network_of(x.alias)))
                        if old is not None and (old.name, old.alias) != (x.name, x.alias):
                            note((old.name, network_of(old.alias)))
            elif mtype == nlparse.RTM_DELLINK:
                x = nlparse.link(data, a, end)
                old = self.links.pop(x.ifindex, None)
                if old is not None:
                    if _matters(old, None, watched):
                        changed = True
                        note((old.name, network_of(old.alias)))
                    ix.link_changed(old, None)
                    for cidr in ix.addrs_of.pop(x.ifindex, ()):
                        self.addrs.pop((x.ifindex, cidr), None)
                    for dst in ix.fdb_of.pop(x.ifindex, ()):
                        self.fdb.discard((x.ifindex, dst))
            elif mtype in (nlparse.RTM_NEWADDR, nlparse.RTM_DELADDR):
                ad = nlparse.addr(data, a, end)
                if not address_kept(ad):
                    continue  # the kernel's own IPv6 addresses (executor/kernel.py)
                cidr = f"{ad.address}/{ad.prefixlen}"
                key = (ad.ifindex, cidr)
                if mtype == nlparse.RTM_NEWADDR:
                    if self.addrs.get(key) != ad:
                        changed = True
                        note(self._link_of(ad.ifindex))
                    self.addrs[key] = ad
                    ix.addrs_of.setdefault(ad.ifindex, set()).add(cidr)
                elif self.addrs.pop(key, None) is not None:
                    _discard(ix.addrs_of, ad.ifindex, cidr)
                    changed = True
                    note(self._link_of(ad.ifindex))
            elif mtype in (nlparse.RTM_NEWNEIGH, nlparse.RTM_DELNEIGH):
                n = nlparse.flood(data, a, end)
                if n is None or n.family != AF_BRIDGE or not n.dst or n.lladdr != FLOOD_MAC:
                    continue  # learned entries, ARP: not what the executor manages
                key2 = (n.ifindex, n.dst)
                if mtype == nlparse.RTM_NEWNEIGH:
                    if key2 not in self.fdb:
                        changed = True
                        note(self._link_of(n.ifindex))
                    self.fdb.add(key2)
                    ix.fdb_of.setdefault(n.ifindex, set()).add(n.dst)
                elif key2 in self.fdb:
                    self.fdb.discard(key2)
                    _discard(ix.fdb_of, n.ifindex, n.dst)
                    changed = True
                    note(self._link_of(n.ifindex))
        if changed:
            self.changes += 1
            c = self.changes
            self.recent.extend((c, name, net) for name, net in touched)
        return changed

    def _link_of(self, ifindex: int) -> tuple[str | None, str | None]:
        x = self.links.get(ifindex)
        return (None, None) if x is None else (x.name, network_of(x.alias))

    def changed_outside(self, after: int, scope: Scope) -> bool:
        """Whether a change numbered above ``after`` concerned a link outside ``scope`` (its
        networks' links, its link names, the links it only looks at), or one not known then,
        or one no longer remembered (:data:`RECENT`): a pass scoped to ``scope`` did not look
        at it, yet its own count of changes covers it (found by review: a bridge of another
        network deleted while a scoped pass ran was repaired only by the next sweep)."""
        with self._lock:
            if self.changes <= after:
                return False
            recent = self.recent
            if not recent or recent[0][0] > after + 1:
                return True  # some of them are forgotten: look at the whole host
            for n, name, net in reversed(recent):
                if n <= after:
                    break
                if name is None:
                    return True
                if not (
                    name in scope.links
                    or name in scope.support
                    or (net is not None and net in scope.networks)
                ):
                    return True
        return False

    def settle(self, timeout: float = 2.0) -> bool:
        """Wait until every notification queued so far is applied (False: gave up). Without
        notifications: read the kernel again."""
        sock = self._mcast
        if not self.live:
            self.resync()
            return True
        if sock is None:
            return True
        deadline = time.monotonic() + timeout
        quiet = 0
        while True:
            # Nothing queued on the socket and the reader not holding a datagram it took —
            # twice in a row (it may have just taken one between the two checks). Meanwhile
            # wait for the reader to apply what it has (not a spin: it needs the GIL).
            readable, _, _ = select.select([sock], [], [], 0)
            quiet = quiet + 1 if not readable and not self._busy else 0
            if quiet >= 2:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._applied:
                if readable or self._busy:
                    self._applied.wait(min(left, 0.005))

    # --- what a pass reads ----------------------------------------------------------------

    def state(self, scope: Scope | None = None) -> CachedState:
        """The links, addresses and flood entries on our VXLAN links as the executor models
        them — all, or only those of ``scope`` (executor/incremental.py: the rule of
        ``narrow``, applied before anything is built). With a scope, the links are found
        through the cache's indexes (by name, by the network in their alias): an incremental
        pass pays for its networks, not for the host's thousands of links."""
        return complete(self.state_steps(scope))

    def state_steps(self, scope: Scope | None = None) -> Steps[CachedState]:
        """:meth:`state` in steps (executor/slices.py): the cache as it is at the first step,
        taken under its lock at once, then modelled in steps (the periodic sweep models the
        whole host on the event loop, in slices)."""
        from .kernel import links_from

        with self._lock:
            changes = self.changes
            ix = self._ix
            by_name = dict(ix.by_name)
            if scope is None:
                raw = list(self.links.values())
                addrs = list(self.addrs.values())
                fdb = list(self.fdb)
                mine = set(self.links)
                names = None
            else:
                mine = {by_name[n] for n in scope.links if n in by_name}
                for nid in scope.networks:
                    mine |= ix.by_net.get(nid, set())
                chosen = mine | {by_name[n] for n in scope.support if n in by_name}
                raw = [self.links[i] for i in chosen]
                keys = [(i, c) for i in mine for c in ix.addrs_of.get(i, ())]
                keys += [
                    (by_name[name], cidr)
                    for name, cidr in scope.addresses
                    if name in by_name and by_name[name] not in mine
                ]
                addrs = [self.addrs[k] for k in keys if k in self.addrs]
                fdb = [(i, d) for i in mine for d in ix.fdb_of.get(i, ())]
                # names of these links and of the links they point at (masters, parents)
                around = {x.master for x in raw if x.master} | {x.parent for x in raw if x.parent}
                around |= {i for i, _ in keys}
                names = {i: self.links[i].name or "" for i in chosen | around if i in self.links}
        yield
        if names is None:
            names = {x.ifindex: x.name or "" for x in raw}
        links = []
        for start in range(0, len(raw), ITEMS):
            yield
            links.extend(links_from(raw[start : start + ITEMS], names))
        links = yield from sorted_steps(links)
        out_addrs = []
        for i, a in enumerate(addrs):
            if not i % ITEMS:
                yield
            name = names.get(a.ifindex)
            if name is None:
                continue
            key = (name, f"{a.address}/{a.prefixlen}")
            if a.ifindex in mine or (scope is not None and key in scope.addresses):
                out_addrs.append(AddrState(key[0], key[1], a.broadcast))
        yield
        ours_vx = {
            link.index: link.name
            for link in links
            if link.ours and link.kind == "vxlan" and link.index in mine
        }
        out_fdb = []
        for i, (index, dst) in enumerate(fdb):
            if not i % ITEMS:
                yield
            if index in ours_vx:
                out_fdb.append((ours_vx[index], dst))
        out_addrs = yield from sorted_steps(out_addrs)
        out_fdb = yield from sorted_steps(set(out_fdb))
        return CachedState(links, out_addrs, out_fdb, changes, by_name)

    def stats(self) -> dict[str, Any]:
        return {
            "links": len(self.links),
            "addresses": len(self.addrs),
            "fdb": len(self.fdb),
            "notifications": self.notifications,
            "resyncs": self.resyncs,
            "overruns": self.overruns,
        }
