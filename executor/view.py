"""One host's view of the log: the fold of its share, kept current. No kernel, no passes.

:class:`HostView` owns the follower of the host's share (executor/share.py), the domain fold
(``State``), the record of host events (``HostBook``, ``DhcpBook``) and the bookkeeping that
grows and shrinks the share as the fold changes: a ``NetworkHostJoined`` for this host, an
allocation or deallocation of its own, a network naming it as its host. The executor daemon
builds its desired state from ``view.state``; tests compare a share-reading view with a
whole-stream one (tests/executor/test_executor_share.py).

A network's deletion comes on its own subject, which the view reads only while it needs the
network; the command service also records it on the registry (``NetworkRetired``), and a view
still holding the network then drops it with what it held of it (``State.retire``): a network
deleted after its host left it, or that it never followed, does not stay in the view for good.

Announcements stored before ``netledger.evt.announce.<host>`` existed sit on their host's own
subject, outside every other share: the command service points at each one that is still a
host's latest (``LegacyAnnouncementIndexed``: service/legacy_pointers.py) and the view fetches
the messages pointed at, by sequence, folding each only if it is that host's ``HostAnnounced``
on that host's subject (which only its executor may write: the service can point, not announce)
and nothing newer of the host was read. One message per such host, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from netledger.events.codec import Envelope, decode
from netledger.events.errors import DecodeError
from netledger.events.host_events import HostAnnounced, HostEvent
from netledger.events.ids import (
    ALL_EVENTS,
    announce_subject,
    host_subject,
    is_id,
    network_subject,
)
from netledger.events.placement_events import (
    LegacyAnnouncementIndexed,
    NetworkHostJoined,
    NetworkRetired,
)
from netledger.events.prune import prune, read_from
from netledger.events.state import State, superseded
from netledger.events.types import HostRetired
from netledger.journal.follow import Follower
from netledger.journal.stream import FOLLOW_HEARTBEAT_S, Connection, message_at

from .dhcpplan import DhcpBook
from .hosts import HostBook
from .share import Share, additions, follow_every, resubscribe_pause
from .snapshot import ViewKind, ViewSnapshot, view_to_wire
from .tasks import stop_task

log = logging.getLogger("netledger.executor.view")
#: Seconds before a failed share update is tried again, doubling up to the max while it fails
SHARE_RETRY_S = 1.0
SHARE_RETRY_MAX_S = 30.0
#: Announcements pointed at (a stream from before the announcement subjects) fetched at once
INDEXED_FETCHES = 64


class HostView:
    def __init__(
        self,
        conn: Connection,
        host: str,
        *,
        network_host: bool = False,
        share: bool = True,
        on_change: Callable[[], None] | None = None,
        heartbeat: float = FOLLOW_HEARTBEAT_S,
    ) -> None:
        self.conn = conn
        self.host = host
        #: its follower's idle heartbeat (``executor run --follow-heartbeat``)
        self.heartbeat = heartbeat
        self.use_share = share
        self.share = Share(host, network_host)
        self.state = State()
        self.book = HostBook(host)
        self.dhcp_book = DhcpBook(host)
        #: called when something folded may change this host's desired state
        self.on_change = on_change or (lambda: None)
        self.follower: Follower | None = None
        #: networks whose subjects are read now, and networks just joined (read next)
        self.networks: set[str] = set()
        self._joining: set[str] = set()
        #: network -> the sequence of its join (``_joining``): followed until read past the
        #: message after it, where a pre-linked allocation lands (service/prelink.py)
        self._join_seq: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        #: following every network (many networks here: executor/share.py)
        self.every = False
        #: what the last resubscription cost (seconds) and when it ended (loop time): the
        #: background task spaces resubscriptions out (share.resubscribe_pause)
        self._last_cost = 0.0
        self._last_end = 0.0
        #: resubscriptions so far (tests, logs)
        self.resubscriptions = 0
        #: this host's newest announcement is on its host subject (a stream from before
        #: netledger.evt.announce.<host>): its executor announces again where others read
        self.legacy_announcement = False
        #: host -> the sequence of its announcement the service pointed at, not fetched yet
        #: (:meth:`_read_indexed`; the view is not settled until it is)
        self._indexed: dict[str, int] = {}
        #: networks whose events were folded since the last take_dirty() (None: all of them —
        #: an announcement or a new pool concerns every network)
        self._dirty: set[str] | None = set()
        #: the networks this host serves (``Share.serving``) as of the last share update, and
        #: the networks touched since (None: recompute from every network)
        self._serving: set[str] | None = None
        self._touched: set[str] | None = set()
        self._task: asyncio.Task[None] | None = None
        #: the stream sequence the follower starts at (after a restored snapshot: its seq + 1)
        self._start_seq = 1
        #: started and following (a follower reading the share's history at start has folded
        #: more than its position says until it is done)
        self._ready = False

    @property
    def kind(self) -> ViewKind:
        return ViewKind(self.host, self.use_share, self.share.network_host)

    def restore(self, snap: ViewSnapshot) -> None:
        """Start from a snapshot (executor/snapshot.py) instead of an empty fold: :meth:`start`
        then reads the share from the sequence after it. Before :meth:`start` only."""
        assert self.follower is None, "restore before start"
        self.state, self.book, self.dhcp_book = snap.state, snap.book, snap.dhcp_book
        self.networks, self._joining = set(snap.networks), set(snap.joining)
        # Their joins' sequences are not kept: at most the snapshot's (read past it next).
        self._join_seq = dict.fromkeys(self._joining, snap.seq)
        self.every = snap.every
        self.legacy_announcement = snap.legacy_announcement
        # Derived: recomputed from the fold (the first pass diffs everything anyway).
        self._serving, self._touched, self._dirty = None, None, None
        self._start_seq = snap.seq + 1

    def settled(self) -> bool:
        """Whether the fold is, right now, the share read up to ``follower.position``: the
        follower runs and no resubscription is filling a new network in."""
        f = self.follower
        return (
            self._ready
            and f is not None
            and f.failure is None
            and not self._lock.locked()
            and not self._indexed
        )

    def snapshot_extra(self) -> dict[str, Any]:
        """The view's bookkeeping beside the fold, for its snapshot (executor/snapshot.py)."""
        return view_to_wire(
            self.kind,
            self.book,
            self.dhcp_book,
            self.networks,
            self._joining,
            self.every,
            self.legacy_announcement,
        )

    def take_dirty(self) -> set[str] | None:
        """The networks touched since the last call (None: every network)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    async def start(self) -> None:
        subjects = self.share.subjects(self.networks, self.every) if self.use_share else ALL_EVENTS
        self.follower = Follower(
            self.conn,
            self._on_message,
            start_seq=self._start_seq,
            subject=subjects,
            heartbeat=self.heartbeat,
        )
        await self.follower.start()
        await self.sync()
        if self.use_share:
            self._task = asyncio.create_task(self._follow_share(), name="netledger-share")
        self._ready = True
        self._forget_deleted()

    async def stop_following(self) -> None:
        """Read no further (``--once``: its pass applies the log as of the sync before it).
        What was folded stays; so does the position the pass reports."""
        self._ready = False
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self.follower is not None:
            await self.follower.stop()

    async def close(self) -> None:
        self._ready = False
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None

    async def sync(self) -> int:
        """Catch up with the log — the share growing as it is read — and return the stream
        sequence everything of the share has been handled up to."""
        assert self.follower is not None
        while True:
            target = await self.follower.catch_up()
            if not await self.update_share() and self._joining <= self.networks:
                return target

    async def update_share(self) -> bool:
        """Follow the networks the fold now says this host needs; True when that changed."""
        if not self.use_share or self.follower is None:
            return False
        async with self._lock:  # the background task and sync() must not interleave
            # Until none is left: one pointed at meanwhile must not wait for the next change
            # (_update_share clears the flag its arrival set).
            while self._indexed:
                await self._read_indexed()
            return await self._update_share(self.follower)

    def _announced_since(self, host: str, seq: int) -> bool:
        """Whether an announcement of ``host`` at ``seq`` or after it was read (on the
        announcement subject; or this one itself: the host is this host, or the whole log)."""
        st = self.state
        return st.seq_of(announce_subject(host)) > seq or st.seq_of(host_subject(host)) >= seq

    async def _read_indexed(self) -> None:
        """Fetch and fold the announcements the service pointed at (module docstring)."""
        todo = sorted(self._indexed.items(), key=lambda hs: hs[1])
        for i in range(0, len(todo), INDEXED_FETCHES):
            chunk = todo[i : i + INDEXED_FETCHES]
            wanted = [(h, seq) for h, seq in chunk if not self._announced_since(h, seq)]
            # From the stream's leader (message_at): a direct get, 2-3x faster, may be answered
            # by a replica that has not stored the message yet — and the pointer is dropped.
            msgs = await asyncio.gather(*(message_at(self.conn, seq) for _, seq in wanted))
            for (h, seq), m in zip(wanted, msgs, strict=True):
                self._fold_indexed(h, seq, m)
            for h, seq in chunk:
                if self._indexed.get(h) == seq:  # else a newer pointer came meanwhile
                    del self._indexed[h]

    def _fold_indexed(self, host: str, seq: int, m: Any) -> None:
        """Fold the message ``m`` the service said is ``host``'s announcement at ``seq``."""
        subject = host_subject(host)
        env: Envelope | None = None
        if m is None:
            why = "the stream holds no such message"
        elif m.subject != subject:
            why = f"it is on {m.subject}"
        else:
            try:
                env = decode(m.data or b"")
                why = f"it is a {env.type} of {getattr(env.event, 'host', None)}"
            except DecodeError as exc:
                why = exc.message
        if env is None or not isinstance(env.event, HostAnnounced) or env.event.host != host:
            log.warning("no announcement of %s at seq %d, where the service points: %s",
                        host, seq, why)  # fmt: skip
            return
        if self._announced_since(host, seq):  # read while it was fetched
            return
        refused = self.state.fold_message(seq, subject, env)
        if refused is not None:
            log.warning("skipping the announcement of %s at %d: %s", host, seq, refused)
            return
        # Read through its pointer: nothing left to index (as in the whole log's fold).
        self.state.indexed(host, seq)
        self._handle(seq, subject, env)

    async def _update_share(self, follower: Follower) -> bool:
        self._changed.clear()
        needed = self._needed()
        if needed == self.networks and follower.subscribed:
            # (Not subscribed: a resubscription failed after its backfill was handed, and that
            # backfill took the added network out of the share again — the subjects are
            # subscribed to again below, with nothing to read first. Noticed by review h132.)
            self._read_joins(follower)
            return False
        before = self.networks
        # A scan of every network, but only when the share changed (a join, a leave), which
        # costs a resubscription anyway.
        live = sum(1 for _ in self.state.live_networks())
        every = follow_every(len(needed), live, self.every)
        if every and self.every:
            # Every network is followed already, its whole history read: nothing to read.
            self.networks = needed
            # Every network's messages are read now, but a switch back to one subject each
            # must still find the joins whose allocations are not read yet.
            self._read_joins(follower)
            self.on_change()
            return True
        if every:
            # From now on every network: read each from where the fold left it (most never;
            # the follower reads them with one wildcard consumer: journal/follow.py).
            backfill = {network_subject(n): read_from(self.state, n) for n in self.state.networks}
        elif self.every:
            backfill = {}  # back to one subject each: all of them were read to this point
        else:
            backfill = additions(self.state, before, needed)
        loop = asyncio.get_running_loop()
        t = loop.time()
        await follower.set_subjects(self.share.subjects(needed, every), backfill)
        # The new consumer reads on from the last message handled: what a catch-up had put
        # ``position`` past that (nothing more of the old share) is not read of the new
        # subjects yet. A snapshot at the old position would skip it for good.
        follower.position = min(follower.position, follower.applied_seq)
        self._last_end = loop.time()
        self._last_cost = self._last_end - t
        self.resubscriptions += 1
        self.every = every
        self.networks = needed
        # Joins folded while resubscribing (after `needed` was computed) stay for the next
        # round; those just read up to the point reached, until read past it (_read_joins).
        self._read_joins(follower)
        log.info(
            "share of %s: %d network(s) (+%d -%d)%s in %.3fs",
            self.host,
            len(needed),
            len(needed - before),
            len(before - needed),
            ", every network" if every else "",
            self._last_cost,
        )
        self.on_change()
        return True

    def _read_joins(self, follower: Follower) -> None:
        """Forget the joins whose networks are followed and read past the message after the
        join. With the join appended before its allocation (service/prelink.py: the
        allocation, if any, is the very next message) the network is served only once that
        message is folded: dropped before, the allocation would never be read (found by the
        share-vs-whole-log differential test). A join whose allocation was refused (nothing
        of this host there) is dropped once read past; one of a deleted network at once."""
        if not self._joining:
            return
        reached = follower.position
        done = {
            n
            for n in self._joining
            if n not in self.state.networks
            or (n in self.networks and reached > self._join_seq.get(n, 0))
        }
        self._joining -= done
        for n in done:
            self._join_seq.pop(n, None)

    def _needed(self) -> set[str]:
        """``Share.networks_needed``, recomputed for the networks touched since the last time
        only (a host following 1,000 networks paid ~1.5 ms of the command's latency
        re-reading every network at each allocation)."""
        touched, self._touched = self._touched, set()
        if self._serving is None or touched is None:
            self._serving = self.share.serving(self.state)
        elif touched:
            self._serving -= touched
            self._serving |= self.share.serving(self.state, touched)
        joined = {nid for nid in self._joining if nid in self.state.networks}
        return self._serving | joined

    async def _follow_share(self) -> None:
        loop = asyncio.get_running_loop()
        retry = SHARE_RETRY_S
        while True:
            await self._changed.wait()
            # A consumer of N filter subjects costs the server ~N² to create (85 ms at 1,000):
            # after an expensive one, wait a little and take the joins of the while together.
            pause = resubscribe_pause(self._last_cost, loop.time() - self._last_end)
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                await self.update_share()
                retry = SHARE_RETRY_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # tried again soon; the sweep reads the kernel anyway
                if retry == SHARE_RETRY_S:
                    log.exception("updating the share of the log this host reads failed")
                else:
                    log.warning(
                        "updating the share failed again (%s): next try in %.0fs", exc, retry
                    )
                await asyncio.sleep(retry)
                retry = min(retry * 2, SHARE_RETRY_MAX_S)
                # Not "at the next change": a failed resubscription may have left the follower
                # with no subscription, and then no change is ever read (review hrev5).
                self._changed.set()

    def _on_message(
        self, seq: int, subject: str, env: Envelope | None, err: DecodeError | None, msg: Msg
    ) -> None:
        # What the fold refuses (undecodable, a foreign subject, values it cannot take) is
        # skipped as the service skips it (events/state.py ``fold_message``).
        refused = self.state.fold_message(seq, subject, env, err.message if err else "undecodable")
        if refused is not None or env is None:
            log.warning("skipping message %d on %s: %s", seq, subject, refused)
            return
        self._handle(seq, subject, env)
        self._forget_deleted()

    def _forget_deleted(self) -> None:
        """What the fold no longer needs of deleted networks goes (events/prune.py), once the
        start has read the share: until then the registry, read first, may have retired a
        network whose subject is read next (the entry ``State.retire`` set skips its old
        messages). From then on a subject is read on from where the view is, or — a network
        the share needs now, a live one — from ``read_from``: never again at or before an
        entry forgotten."""
        st = self.state
        if self._ready and st.prunable:
            prune(st, st.last_seq)

    def _host_retired(self, host: str) -> None:
        """A host left the cloud (events/decide_host.py): its VTEP and role go, unless it is
        back already (announced since: the fold says)."""
        if not self.state.retired(host) or not self.book.retire(host):
            return
        if host == self.host:
            log.error(
                "this host (%s) was retired (`netledger host retire`) while its executor runs:"
                " stop it, or restart it to bring the host back",
                host,
            )
            self._changed.set()  # its own role is gone: its share may change
        self._dirty = None  # a VTEP or a network host's role: every network
        self.on_change()

    def _handle(self, seq: int, subject: str, env: Envelope) -> None:
        """What a folded message changes beside the fold: the records, the share."""
        ev = env.event
        if isinstance(ev, HostEvent):
            if isinstance(ev, HostAnnounced):
                if superseded(self.state, seq, subject, ev):
                    return
                if ev.host == self.host:
                    self.legacy_announcement = subject != ev.subject()
            self.dhcp_book.apply(env)
            if self.book.apply(env):
                self._dirty = None  # a VTEP or a network host's role: every network
                self.on_change()
            return
        if isinstance(ev, HostRetired):
            self._host_retired(ev.host)
            return
        nid = getattr(ev, "network_id", None)
        if isinstance(nid, str):
            if isinstance(ev, NetworkRetired) and not self.state.retire(nid, seq):
                return  # its NetworkDeleted was read: nothing left to change
            if self._dirty is not None:
                self._dirty.add(nid)
            if self._touched is not None:
                self._touched.add(nid)
        elif isinstance(ev, LegacyAnnouncementIndexed):
            # Fetched by the next share update (async); the whole log has the message itself.
            if (
                self.use_share
                and is_id(ev.host)
                and type(ev.seq) is int
                and ev.seq > self._indexed.get(ev.host, 0)
            ):
                self._indexed[ev.host] = ev.seq
                self._changed.set()
            return
        else:
            self._dirty = None  # a pool, a revert marker: every network
            self._touched = None
        self.on_change()
        if not self.use_share:
            return
        if isinstance(ev, NetworkHostJoined):
            if ev.host == self.host:
                # Also when the network is followed now: it may be about to be dropped (the
                # host's last address there went), and the allocation after this join is
                # not read yet.
                self._joining.add(ev.network_id)
                self._join_seq[ev.network_id] = seq
                self._changed.set()
        else:
            # An allocation or deallocation of ours, a network naming us as its host, a
            # deletion or retirement: the share may change (recomputed once the burst is folded).
            self._changed.set()
