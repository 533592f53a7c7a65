"""A synthetic but realistic cloud history, written straight into the ``NETLEDGER`` stream.

The cloud: ``hosts`` hosts (``host-0`` ...), ``networks`` VXLAN networks (multi-host, /26 each,
one project each), each network served by a small fixed set of ``peers`` hosts (so every host
has instances in ~``networks * peers / hosts`` networks), one floating-IP pool, and a steady
number of live instances (4 per network by default). The history is that cloud growing older:

1. every executor announces itself; the networks and the pool are created;
2. the cloud fills up in waves of as many networks as there are hosts: the allocations (the
   first in a network associates its project), one executor pass per host, the leases as the
   instances boot, one sighting per host, ~10% floating IPs and their NAT passes — ~136 k
   events for the default cloud (10,000 host-network pairs, each a placement, two links, a
   gateway, an FDB entry and a dnsmasq start);
3. the rest is churn: an instance is deleted (its floating IP released, its address
   deallocated, the DHCP release frees it) and another is booted in the same network on one of
   its hosts (allocated, leased, ~10% get a floating IP); now and then an executor restarts.

So the live state after the fill and after 1 M events is the same size; only the age differs.

Domain events come from the real pure deciders (``decide`` on a local ``State``), except where a
decider scans the whole cloud per call (a lease looks the address up in every network; a
deallocation scans every floating IP): those are built directly following the same rules, and
``verify=True`` (the tests) runs the decider on every one of them and requires equal events.
Each decision goes with what the command service appends with it for the executors
(``events/placement.py``: a host's first instance in a network, floating-IP mappings).
Host events are what each host's executor appends for real changes (no heartbeats): links,
gateway address, FDB entries toward the network's other hosts, dnsmasq start/reload/stop, NAT
table, a ``HostReconciled`` after each pass, and a sighting report when its set of instance
MACs changes (the whole set, ``HostInstancesSeen``, at its start and every ``FULL_EVERY``
reports; what changed, ``HostInstancesChanged``, in between: executor/sightings.py). Every event is folded into the local state with the sequence it gets in the
stream (the stream starts empty and only this writes to it).
"""

from __future__ import annotations

import functools
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from history_pub import BatchWriter, Message
from history_rt import HostRt, pack
from history_types import History, Live, Progress

from netledger.events.codec import Actor, Envelope
from netledger.events.commands import (
    Command,
    FixedIpAllocate,
    FixedIpDeallocate,
    FixedIpLease,
    FixedIpRelease,
    FloatingIpAllocate,
    FloatingIpAssociate,
    FloatingIpDeallocate,
    FloatingPoolCreate,
    NetworkCreate,
    Request,
)
from netledger.events.decide import Pending, decide
from netledger.events.host_events import (
    FULL_EVERY,
    HostAnnounced,
    HostEvent,
    HostInstancesChanged,
    HostInstancesSeen,
)
from netledger.events.ids import REGISTRY_SUBJECT, RETIRED_HOSTS, host_subject, network_subject
from netledger.events.state import State
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpLeased,
    FixedIpReleased,
    FloatingIpAssociated,
    FloatingIpDisassociated,
    NetworkAssociated,
)
from netledger.journal.stream import MAX_BATCH, Connection, last_seq

__all__ = ["Cloud", "History", "Live", "build_history"]

# What the command service appends with a decision for the executors' reading (a host's first
# instance in a network, a floating IP's mapping on its network): events/placement.py, whose
# rules are still moving — use what this tree has.
try:
    from netledger.events.placement import companions
except ImportError:  # pragma: no cover - depends on the tree
    try:
        from netledger.events.placement import joins as companions  # type: ignore[assignment]
    except ImportError:
        companions = None  # type: ignore[assignment]
try:
    from netledger.events.ids import placement_subject
except ImportError:  # pragma: no cover - a tree from before placements
    placement_subject = None  # type: ignore[assignment]

#: 2026-01-01 UTC: the history's clock (deterministic; the log's times are all that matter)
T0 = 1_767_225_600.0
POOL = "public"
NET_SIZE = 64
#: networks per NetworkCreate (a /15 of /26 blocks)
NETS_PER_CREATE = 2048
#: an executor restarts (appending only its announcement) with this probability per churn step
RESTART_P = 0.01
ADMIN = Actor(role="admin", user="ops")


async def build_history(
    conn: Connection | None,
    total_events: int,
    *,
    hosts: int = 1000,
    networks: int = 5000,
    instances: int | None = None,
    peers: int = 2,
    floating_share: float = 0.1,
    seed: int = 0,
    focus_host: str = "host-7",
    verify: bool = False,
    progress: Progress | None = None,
) -> History:
    """Write a cloud history of at least ``total_events`` events into the empty stream of
    ``conn`` (it stops at the end of a churn step, so a few more; never fewer than the setup and
    fill need). Deterministic for a given seed (apart from batch ids). ``conn=None``: a dry
    run (nothing is written; :attr:`Cloud.sink` may collect the batches)."""
    cloud = Cloud(
        hosts=hosts,
        networks=networks,
        instances=instances,
        peers=peers,
        floating_share=floating_share,
        seed=seed,
        focus_host=focus_host,
        verify=verify,
    )
    return await cloud.build(conn, total_events, progress)


class Cloud:
    """The generator: a model of the cloud and of each host's executor, plus the fold."""

    def __init__(
        self,
        *,
        hosts: int = 1000,
        networks: int = 5000,
        instances: int | None = None,
        peers: int = 2,
        floating_share: float = 0.1,
        seed: int = 0,
        focus_host: str = "host-7",
        verify: bool = False,
    ) -> None:
        if hosts < 1 or networks < 1:
            raise ValueError("need at least one host and one network")
        self.rng = random.Random(seed)
        self.seed = seed
        self.verify = verify
        self.floating_share = floating_share
        self.n_instances = instances if instances is not None else 4 * networks
        self.n_networks = networks
        self.peers = max(1, min(peers, hosts))
        self.state = State()
        self.seq = 0
        self.domain_seq = 0
        self.t = T0
        self.out: list[Message] = []
        self.counts: Counter[str] = Counter()
        self.subject_counts: Counter[str] = Counter()
        self.host_total = 0
        #: host -> its newest report as its executor knows it: (seq, MACs, networks, changes
        #: sent since its last whole set) — what executor/sightings.py sends a change against
        self.reported: dict[str, tuple[int, frozenset[str], frozenset[str], int]] = {}
        self.host_names = [f"host-{i}" for i in range(hosts)]
        self.focus_host = focus_host if focus_host in self.host_names else self.host_names[0]
        self.hosts = {
            h: HostRt(h, f"192.168.{(i + 1) >> 8}.{(i + 1) & 255}")
            for i, h in enumerate(self.host_names)
        }
        self.network_ids: list[str] = []
        #: network -> its fixed hosts (the ones its instances are placed on)
        self.net_hosts: dict[str, tuple[str, ...]] = {}
        self.net_project: dict[str, str] = {}
        self.live: dict[str, Live] = {}
        self._live_list: list[str] = []
        self._live_pos: dict[str, int] = {}
        self._ncmd = 0
        self._ninst = 0
        self._steps = 0
        self._built = False
        #: without a connection (a dry run) the batches go here instead (tests)
        self.sink: Callable[[list[Message]], None] | None = None

    # --- the stream -----------------------------------------------------------------------

    async def build(
        self, conn: Connection | None, total_events: int, progress: Progress | None = None
    ) -> History:
        if self._built:
            raise RuntimeError("already built: use extend()")
        self._built = True
        return await self._run(conn, total_events, progress, setup=True)

    async def extend(
        self, conn: Connection | None, events: int, progress: Progress | None = None
    ) -> History:
        if not self._built:
            raise RuntimeError("build() first")
        return await self._run(conn, self.seq + events, progress, setup=False)

    async def _run(
        self, conn: Connection | None, until: int, progress: Progress | None, setup: bool
    ) -> History:
        t = time.perf_counter()
        writer = None
        if conn is not None:
            have = await last_seq(conn)
            if have != self.seq:
                raise RuntimeError(f"the stream is at seq {have}, this history at {self.seq}")
            writer = BatchWriter(conn, self.seq)
        start = self.seq
        mark = 0

        async def drain(final: bool) -> None:
            nonlocal mark
            while len(self.out) >= MAX_BATCH or (final and self.out):
                chunk = self.out[:MAX_BATCH]
                del self.out[:MAX_BATCH]
                if writer is not None:
                    await writer.send(chunk)
                elif self.sink is not None:
                    self.sink(chunk)
            if progress is not None and self.seq - mark >= 100_000:
                mark = self.seq
                progress(self.seq)

        if setup:
            for part in self._setup():
                part()
                await drain(False)
        while self.seq < until:
            self._churn_step()
            if len(self.out) >= MAX_BATCH:
                await drain(False)
        await drain(True)
        if writer is not None:
            await writer.wait()
        return self.history(time.perf_counter() - t, self.seq - start)

    # --- events -------------------------------------------------------------------------

    def _cid(self, kind: str) -> str:
        self._ncmd += 1
        return f"s{self.seed}-{kind}-{self._ncmd}"

    def _emit(self, events: list[Event], cid: str, actor: Actor) -> None:
        """Fold ``events`` (one decision or one executor pass) with the sequences they get;
        a decision goes with what the service appends with it for the executors."""
        state, out = self.state, self.out
        if companions is not None and events and not isinstance(events[0], HostEvent):
            events = [*events, *companions(state, events, set())]
        for i, ev in enumerate(events):
            self.t += 0.01
            self.seq += 1
            env = Envelope(ev, f"{cid}:{i}", cid, round(self.t, 3), actor)
            subject = ev.subject()
            state.apply(self.seq, subject, env)
            out.append((subject, pack(env), env.event_id))
            self.counts[ev.TYPE] += 1
            self.subject_counts[subject] += 1
            if isinstance(ev, HostEvent):
                self.host_total += 1
            else:
                self.domain_seq = self.seq

    def _decide(
        self, cmd: Command, cid: str, actor: Actor, pending: Pending | None = None
    ) -> list[Event]:
        return decide(self.state, Request(cmd, cid, actor), pending or Pending()).events

    def _direct(self, cmd: Command, cid: str, actor: Actor, events: list[Event]) -> list[Event]:
        """Events built without the decider (it would scan the cloud); checked when verifying."""
        if self.verify:
            want = self._decide(cmd, cid, actor)
            if want != events:
                raise AssertionError(f"{cmd.NAME}: built {events}, the decider says {want}")
        return events

    def _pass(self, rt: HostRt, events: list[HostEvent]) -> None:
        """One executor pass that changed something: its events and a ``HostReconciled``."""
        if not events:
            return
        events.append(rt.reconciled(self.domain_seq, len(events), self.rng.random()))
        self._emit(events, rt.pass_id(self.seed), rt.actor)  # type: ignore[arg-type]

    def _sighting(self, rt: HostRt) -> None:
        """What its executor appends (executor/sightings.py ``report_of``): the whole set at
        its start (after a restart: the first report after adopting the log's), then what
        changed, a whole set again every ``FULL_EVERY`` reports or when that is no larger."""
        macs, nets = frozenset(rt.macs), frozenset(rt.links)
        prev = self.reported.get(rt.name)
        ev: HostEvent
        if prev is not None and prev[3] < FULL_EVERY - 1:
            base, old, old_nets, changes = prev
            added, removed = macs - old, old - macs
            if len(added) + len(removed) < len(macs):
                ev = HostInstancesChanged(
                    host=rt.name,
                    base_seq=base,
                    added=sorted(added),
                    removed=sorted(removed),
                    networks_added=sorted(nets - old_nets, key=int),
                    networks_removed=sorted(old_nets - nets, key=int),
                    leases=len(macs),
                )
                self._emit([ev], rt.pass_id(self.seed), rt.actor)
                self.reported[rt.name] = (self.seq, macs, nets, changes + 1)
                return
        ev = HostInstancesSeen(
            host=rt.name,
            macs=sorted(macs),
            networks=sorted(nets, key=int),
            reason="start" if prev is None else "change",
            leases=len(macs),
        )
        self._emit([ev], rt.pass_id(self.seed), rt.actor)
        self.reported[rt.name] = (self.seq, macs, nets, 0)

    # --- setup and fill -----------------------------------------------------------------

    def _setup(self) -> list[Callable[[], None]]:
        parts: list[Callable[[], None]] = [self._announce_all, self._create_networks]
        wave = len(self.host_names)
        for w in range(0, self.n_networks, wave):
            parts.append(functools.partial(self._fill, range(w, min(w + wave, self.n_networks))))
        return parts

    def _announce_all(self) -> None:
        for h in self.host_names:
            self._announce(self.hosts[h])

    def _announce(self, rt: HostRt) -> None:
        # (a restarted executor's next report is a start: a whole set)
        self.reported.pop(rt.name, None)
        ev = HostAnnounced(
            host=rt.name,
            vtep_address=rt.vtep,
            physical_interface="eth1",
            public_interface="eth0",
            network_host=False,
        )
        self._emit([ev], rt.pass_id(self.seed), rt.actor)

    def _create_networks(self) -> None:
        done = 0
        k = 0
        while done < self.n_networks:
            n = min(NETS_PER_CREATE, self.n_networks - done)
            cmd = NetworkCreate(
                label=f"tenant{k}",
                cidr=f"10.{2 * k}.0.0/15",
                mode="vxlan",
                num_networks=n,
                network_size=NET_SIZE,
                vni_start=1000 + done,
                multi_host=True,
            )
            cid = self._cid("net")
            events = self._decide(cmd, cid, ADMIN)
            for i in range(0, len(events), MAX_BATCH):
                self._emit(events[i : i + MAX_BATCH], cid if i == 0 else f"{cid}-{i}", ADMIN)
            self.network_ids += [e.network_id for e in events]  # type: ignore[attr-defined]
            done += n
            k += 1
        hosts = self.host_names
        rounds = (self.n_networks + len(hosts) - 1) // len(hosts)
        offsets = [self.rng.sample(range(1, len(hosts)), self.peers - 1) for _ in range(rounds)]
        for j, nid in enumerate(self.network_ids):
            a = j % len(hosts)
            self.net_hosts[nid] = (
                hosts[a],
                *(hosts[(a + o) % len(hosts)] for o in offsets[j // len(hosts)]),
            )
            self.net_project[nid] = f"p{nid}"
        want = max(256, int(self.n_instances * self.floating_share * 2))
        size = 1 << (want - 1).bit_length()
        pool = FloatingPoolCreate(pool=POOL, cidr=f"172.16.0.0/{32 - size.bit_length() + 1}")
        cid = self._cid("pool")
        self._emit(self._decide(pool, cid, ADMIN), cid, ADMIN)

    def _fill(self, wave: range) -> None:
        """A wave of networks filled with their share of the live instances: the allocations,
        one pass per host (its executor debounces the burst), the leases as the instances
        boot, one sighting per host, ~10% floating IPs and one NAT pass per host that got any."""
        made: list[Live] = []
        for j in wave:
            nid = self.network_ids[j]
            n = self.n_instances // self.n_networks + (j < self.n_instances % self.n_networks)
            hosts = self.net_hosts[nid]
            made += [self._allocate(nid, hosts[k % len(hosts)]) for k in range(n)]
        touched: dict[str, set[str]] = {}
        for x in made:
            touched.setdefault(x.host, set()).add(x.network_id)
        order = sorted(touched, key=lambda h: int(h.rsplit("-", 1)[1]))
        for h in order:
            self._pass(self.hosts[h], self.hosts[h].sync(self, sorted(touched[h], key=int)))
        for x in made:
            self._lease(x)
        for h in order:
            self._sighting(self.hosts[h])
        floated = {
            x.host for x in made if self.rng.random() < self.floating_share and self._float(x)
        }
        for h in order:
            if h in floated:
                self._pass(self.hosts[h], self.hosts[h].sync(self, []))

    # --- one instance ---------------------------------------------------------------------

    def _allocate(self, nid: str, host: str) -> Live:
        project = self.net_project[nid]
        self._ninst += 1
        inst = f"i{self.seed}-{self._ninst}"
        actor = Actor(project=project, role="member", user=f"user-{project}")
        cid = self._cid("alloc")
        cmd = FixedIpAllocate(instance=inst, project=project, host=host)
        n = self.state.networks[nid]
        if n.project is None:
            # The project's first instance: the decider gives it the lowest free network (this
            # one: networks fill in order) after scanning them all; tell it which instead.
            events = self._decide(cmd, cid, actor, Pending(project_networks={project: nid}))
            events = self._direct(cmd, cid, actor, [NetworkAssociated(nid, project), *events])
        else:
            events = self._decide(cmd, cid, actor)
        self._emit(events, cid, actor)
        ev = next(e for e in events if isinstance(e, FixedIpAllocated))
        x = Live(inst, nid, ev.address, ev.mac, host, project)
        self.live[inst] = x
        self._live_pos[inst] = len(self._live_list)
        self._live_list.append(inst)
        self.hosts[host].nets[nid] = self.hosts[host].nets.get(nid, 0) + 1
        return x

    def _lease(self, x: Live) -> None:
        """The instance booted: its DHCP lease (reported by its host's lease script)."""
        rt = self.hosts[x.host]
        cid = self._cid("lease")
        lease = FixedIpLeased(
            network_id=x.network_id, address=x.address, mac=x.mac, instance=x.instance
        )
        cmd = FixedIpLease(address=x.address, mac=x.mac)
        self._emit(self._direct(cmd, cid, rt.dhcp_actor, [lease]), cid, rt.dhcp_actor)
        rt.macs.add(x.mac)

    def _float(self, x: Live) -> bool:
        """A floating IP allocated to the instance's project and associated with it."""
        rt = self.hosts[x.host]
        actor = Actor(project=x.project, role="member", user=f"user-{x.project}")
        cid = self._cid("fip")
        got = self._decide(FloatingIpAllocate(project=x.project, pool=POOL), cid, actor)
        self._emit(got, cid, actor)
        address = got[0].address  # type: ignore[attr-defined]
        cid = self._cid("fipassoc")
        assoc = FloatingIpAssociated(
            pool=POOL,
            address=address,
            project=x.project,
            fixed_address=x.address,
            network_id=x.network_id,
            instance=x.instance,
        )
        cmd = FloatingIpAssociate(address=address, fixed_address=x.address, project=x.project)
        self._emit(self._direct(cmd, cid, actor, [assoc]), cid, actor)
        x.floating = address
        rt.floating[address] = x.address
        return True

    def _delete(self, x: Live) -> None:
        """Deallocate (disassociating its floating IP), the executors' passes, the VM gone,
        the DHCP release that frees the address, the floating IP given back."""
        rt = self.hosts[x.host]
        actor = Actor(project=x.project, role="member", user=f"user-{x.project}")
        events: list[Event] = []
        if x.floating is not None:
            events.append(
                FloatingIpDisassociated(
                    pool=POOL,
                    address=x.floating,
                    project=x.project,
                    fixed_address=x.address,
                    network_id=x.network_id,
                    instance=x.instance,
                    reason="fixed ip deallocated",
                )
            )
        ip = self.state.networks[x.network_id].fixed[x.address]
        events.append(
            FixedIpDeallocated(
                network_id=x.network_id,
                address=x.address,
                instance=x.instance,
                mac=x.mac,
                host=x.host,
                freed=not ip.leased,
            )
        )
        cid = self._cid("dealloc")
        self._emit(
            self._direct(FixedIpDeallocate(instance=x.instance), cid, actor, events), cid, actor
        )
        self._forget(x)
        rt.nets[x.network_id] -= 1
        if not rt.nets[x.network_id]:
            del rt.nets[x.network_id]
        if x.floating is not None:
            rt.floating.pop(x.floating, None)
        self._sync_network(x.network_id, x.host)
        rt.macs.discard(x.mac)
        self._sighting(rt)
        cid = self._cid("release")
        rel = FixedIpReleased(
            network_id=x.network_id, address=x.address, mac=x.mac, instance=x.instance, freed=True
        )
        cmd = FixedIpRelease(address=x.address, mac=x.mac)
        self._emit(self._direct(cmd, cid, rt.dhcp_actor, [rel]), cid, rt.dhcp_actor)
        if x.floating is not None:
            cid = self._cid("fipfree")
            free = FloatingIpDeallocate(address=x.floating, project=x.project)
            self._emit(self._decide(free, cid, actor), cid, actor)

    def _forget(self, x: Live) -> None:
        del self.live[x.instance]
        pos = self._live_pos.pop(x.instance)
        last = self._live_list.pop()
        if last != x.instance:
            self._live_list[pos] = last
            self._live_pos[last] = pos

    def _sync_network(self, nid: str, host: str) -> None:
        """``host``'s instances in ``nid`` changed: its pass, then its peers' (FDB entries)."""
        self._pass(self.hosts[host], self.hosts[host].sync(self, [nid]))
        for g in self.net_hosts[nid]:
            if g != host and nid in self.hosts[g].links:
                self._pass(self.hosts[g], self.hosts[g].sync(self, [nid], dhcp=False))

    def _churn_step(self) -> None:
        self._steps += 1
        self.t += self.rng.expovariate(1 / 30.0)
        if self.rng.random() < RESTART_P:
            self._announce(self.hosts[self.rng.choice(self.host_names)])
        if not self._live_list:
            nid = self.rng.choice(self.network_ids)
        else:
            victim = self.live[self.rng.choice(self._live_list)]
            nid = victim.network_id
            self._delete(victim)
        host = self.rng.choice(self.net_hosts[nid])
        x = self._allocate(nid, host)
        self._sync_network(nid, host)
        self._lease(x)
        rt = self.hosts[host]
        self._sighting(rt)
        if self.rng.random() < self.floating_share and self._float(x):
            self._pass(rt, rt.sync(self, []))

    # --- what was built -------------------------------------------------------------------

    def networks_of(self, host: str) -> list[str]:
        return sorted(self.hosts[host].nets, key=int)

    def share_subjects(self, host: str) -> list[str]:
        announce = HostAnnounced(host, None, None, None, False).subject()
        subjects = [REGISTRY_SUBJECT, announce.rsplit(".", 1)[0] + ".>", host_subject(host)]
        subjects.append(RETIRED_HOSTS)  # (none in this history)
        if placement_subject is not None:
            subjects.append(placement_subject(host))
        return subjects + [network_subject(n) for n in self.networks_of(host)]

    def share(self, host: str) -> int:
        exact: set[str] = set()
        prefixes: list[str] = []
        for s in self.share_subjects(host):
            if s.endswith(".>"):
                prefixes.append(s[:-1])
            else:
                exact.add(s)
        return sum(
            c
            for s, c in self.subject_counts.items()
            if s in exact or any(s.startswith(p) for p in prefixes)
        )

    def history(self, seconds: float = 0.0, written: int = 0) -> History:
        return History(
            last_seq=self.seq,
            counts=dict(self.counts),
            domain_events=self.seq - self.host_total,
            host_events=self.host_total,
            subject_counts=dict(self.subject_counts),
            instances=dict(self.live),
            hosts=list(self.host_names),
            networks=list(self.network_ids),
            pool=POOL,
            focus_host=self.focus_host,
            focus_networks=self.networks_of(self.focus_host),
            focus_share=self.share(self.focus_host),
            seconds=seconds,
            written=written,
            cloud=self,
        )


def generator_version() -> str:
    """What the generated log depends on, as a short hash (the generator's own sources and the
    event types it writes): a log cached under another version is not this generator's (the
    sighting reports became changes on Dec 7, and a cached log of whole sets went on being
    measured as the new one)."""
    import hashlib

    here = Path(__file__).resolve().parent
    repo = here.parent
    h = hashlib.sha256()
    for f in (
        here / "history_gen.py",
        here / "history_rt.py",
        here / "history_types.py",
        repo / "events" / "types.py",
        repo / "events" / "host_events.py",
    ):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]
