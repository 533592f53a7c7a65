"""What a reconcile pass did, as host events: the executor's record of its kernel in the log.

Pure translation, split from the daemon (executor/daemon.py), which runs passes and publishes:
every operation that succeeded becomes one host event, marked ``drift`` when this host's applied
record (executor/hosts.py: ``HostBook``) says it had already made the object — so re-making it
repaired damage from outside. Then the record is checked against the kernel as read back at the
end of the pass: objects of ours present or gone without an event (a crash between applying and
logging) are logged as found (``detail.adopted``) or gone (reason ``found-gone``).
"""

from __future__ import annotations

from msgspec.structs import replace

from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostEvent,
    HostFdbAdded,
    HostFdbRemoved,
    HostForwardingSet,
    HostLinkCreated,
    HostLinkEnslaved,
    HostLinkRemoved,
    HostLinkRepaired,
    HostNatApplied,
    HostNatRemoved,
)

from .hosts import HostBook
from .kernel import OpResult
from .model import (
    AddAddress,
    AddFdb,
    AddrSpec,
    AddrState,
    CreateLink,
    DeleteAddress,
    DeleteFdb,
    DeleteLink,
    DeleteNat,
    Enslave,
    HostActual,
    HostDesired,
    LinkSpec,
    LinkState,
    NatTable,
    SetForwarding,
    SetLink,
    SetNat,
)
from .slices import ITEMS, Steps, complete, index_steps


def applied_events(
    h: str,
    book: HostBook,
    prev: HostDesired | None,
    results: list[OpResult],
    follows: bool = True,
) -> list[HostEvent]:
    """One event per operation that succeeded; ``drift`` when the record says we had made it.
    ``follows``: the NAT table's fixed ranges are the registry's (no ``--fixed-range``).

    A link removed takes its addresses and flood entries with it in the kernel (the diff
    deletes only the link): what the record holds of them is said gone with it (reason
    ``with-link``). Left in the record, the end of the pass found them missing and logged them
    ``found-gone`` — the log called the removal of a network's bridge damage, and an address
    that comes back on a re-created link a drift repair. (A pass reports round by round: what
    an earlier round said is in ``book`` already.)"""
    out: list[HostEvent] = []
    gone = WithLink()
    for r in results:
        if not r.ok:
            continue
        op = r.op
        if isinstance(op, CreateLink):
            s = op.spec
            detail = {
                k: v
                for k, v in (
                    ("master", s.master),
                    ("mtu", s.mtu),
                    ("vni", s.vni),
                    ("vlan", s.vlan),
                    ("parent", s.parent),
                    ("local", s.local),
                )
                if v is not None
            }
            out.append(
                HostLinkCreated(
                    host=h,
                    name=s.name,
                    kind=s.kind,
                    network_id=s.network_id,
                    drift=s.name in book.links,
                    detail=detail,
                )
            )
        elif isinstance(op, DeleteLink):
            out.append(
                HostLinkRemoved(
                    host=h,
                    name=op.name,
                    kind=op.kind or "",
                    network_id=op.network_id,
                    reason=op.reason,
                )
            )
            addresses, fdb = gone.take(book, op.name)
            for address in addresses:
                out.append(
                    HostAddressRemoved(
                        host=h, interface=op.name, address=address, network_id=op.network_id,
                        reason="with-link",
                    )
                )  # fmt: skip
            for dst in fdb:
                out.append(
                    HostFdbRemoved(
                        host=h, interface=op.name, dst=dst, network_id=op.network_id,
                        reason="with-link",
                    )
                )  # fmt: skip
        elif isinstance(op, SetLink):
            out.append(
                HostLinkRepaired(
                    host=h,
                    name=op.spec.name,
                    kind=op.spec.kind,
                    network_id=op.spec.network_id,
                    changes=list(op.changes),
                )
            )
        elif isinstance(op, Enslave):
            drift = prev is not None and op.spec in prev.enslaved
            out.append(
                HostLinkEnslaved(
                    host=h,
                    name=op.spec.interface,
                    master=op.spec.master,
                    network_id=op.spec.network_id,
                    drift=drift,
                )
            )
        elif isinstance(op, AddAddress):
            a = op.spec
            out.append(
                HostAddressAdded(
                    host=h,
                    interface=a.interface,
                    address=a.address,
                    network_id=a.network_id,
                    drift=a.key in book.addresses and a.key not in gone.addresses,
                )
            )
        elif isinstance(op, DeleteAddress):
            out.append(
                HostAddressRemoved(
                    host=h,
                    interface=op.interface,
                    address=op.address,
                    network_id=op.network_id,
                    reason=op.reason,
                )
            )
        elif isinstance(op, AddFdb):
            f = op.spec
            out.append(
                HostFdbAdded(
                    host=h,
                    interface=f.interface,
                    dst=f.dst,
                    network_id=f.network_id,
                    drift=f.key in book.fdb and f.key not in gone.fdb,
                )
            )
        elif isinstance(op, DeleteFdb):
            out.append(
                HostFdbRemoved(
                    host=h,
                    interface=op.interface,
                    dst=op.dst,
                    network_id=None,
                    reason=op.reason,
                )
            )
        elif isinstance(op, SetNat):
            # drift: the log already said this table (it was changed behind our back)
            says = book.nat is not None and _says(book.nat, op.table, follows)
            if says and follows and _registry_moved(prev, op):
                continue  # the registry's ranges moved: the record (they follow it) still holds
            out.append(_nat_applied(h, op.table, says, follows))
        elif isinstance(op, DeleteNat):
            out.append(HostNatRemoved(host=h, reason="no floating IP or served network left"))
        elif isinstance(op, SetForwarding):
            was = book.forwarding_v6 if op.version == 6 else book.forwarding
            out.append(HostForwardingSet(host=h, enabled=op.enabled, drift=was, version=op.version))
    return out


class WithLink:
    """What :func:`applied_events` said removed with its link: (interface, address) and
    (interface, dst)."""

    def __init__(self) -> None:
        self.addresses: set[tuple[str, str]] = set()
        self.fdb: set[tuple[str, str]] = set()
        #: the record's addresses and flood entries by interface (built at the first removal:
        #: one look at the record, not one a removed link)
        self._of: dict[str, tuple[list[str], list[str]]] | None = None

    def take(self, book: HostBook, interface: str) -> tuple[list[str], list[str]]:
        """The record's addresses and flood entries on ``interface``, sorted (once)."""
        if self._of is None:
            self._of = {}
            for i, address in book.addresses:
                self._of.setdefault(i, ([], []))[0].append(address)
            for i, dst in book.fdb:
                self._of.setdefault(i, ([], []))[1].append(dst)
        addresses, fdb = self._of.pop(interface, ([], []))
        self.addresses.update((interface, a) for a in addresses)
        self.fdb.update((interface, d) for d in fdb)
        return sorted(addresses), sorted(fdb)


def record_fixes(
    h: str,
    book: HostBook,
    desired: HostDesired,
    emitted: list[HostEvent],
    final: HostActual,
    follows: bool = True,
) -> list[HostEvent]:
    """Keep the log's record of this host equal to the kernel (crash between apply and log).
    ``follows``: as for :func:`applied_events`."""
    return complete(record_fixes_steps(h, book, desired, emitted, final, follows))


def record_fixes_steps(
    h: str,
    book: HostBook,
    desired: HostDesired,
    emitted: list[HostEvent],
    final: HostActual,
    follows: bool = True,
) -> Steps[list[HostEvent]]:
    """:func:`record_fixes` in steps (executor/slices.py); ``book`` is read in the first step
    (its links, addresses and flood entries) and the last (NAT, forwarding)."""
    links = set(book.links)
    addrs = set(book.addresses)
    fdb = set(book.fdb)
    for e in emitted:
        if isinstance(e, HostLinkCreated):
            links.add(e.name)
        elif isinstance(e, HostLinkRemoved):
            links.discard(e.name)
        elif isinstance(e, HostAddressAdded):
            addrs.add((e.interface, e.address))
        elif isinstance(e, HostAddressRemoved):
            addrs.discard((e.interface, e.address))
        elif isinstance(e, HostFdbAdded):
            fdb.add((e.interface, e.dst))
        elif isinstance(e, HostFdbRemoved):
            fdb.discard((e.interface, e.dst))
    out: list[HostEvent] = []
    want = yield from index_steps(desired.links, _name)
    have = yield from index_steps(final.links, _name, keep=_ours)
    for name in sorted(set(have) - links):
        s = want.get(name)
        out.append(
            HostLinkCreated(
                host=h,
                name=name,
                kind=have[name].kind or "",
                network_id=s.network_id if s else None,
                drift=False,
                detail={"adopted": True},
            )
        )
    for name in sorted(links - set(have)):
        out.append(
            HostLinkRemoved(host=h, name=name, kind="", network_id=None, reason="found-gone")
        )
    want_addr = yield from index_steps(desired.addresses, _key)
    have_addr: set[tuple[str, str]] = set()
    final_keys: set[tuple[str, str]] = set()
    for i, a in enumerate(final.addresses):
        if not i % ITEMS:
            yield
        final_keys.add(a.key)
        if a.key in want_addr:
            have_addr.add(a.key)
    for key in sorted(have_addr - addrs):
        out.append(
            HostAddressAdded(
                host=h,
                interface=key[0],
                address=key[1],
                network_id=want_addr[key].network_id,
                drift=False,
            )
        )
    for key in sorted(addrs - final_keys):
        out.append(
            HostAddressRemoved(
                host=h, interface=key[0], address=key[1], network_id=None, reason="found-gone"
            )
        )
    have_fdb = set(final.fdb)
    for key in sorted(have_fdb - fdb):
        out.append(HostFdbAdded(host=h, interface=key[0], dst=key[1], network_id=None, drift=False))
    for key in sorted(fdb - have_fdb):
        out.append(
            HostFdbRemoved(
                host=h, interface=key[0], dst=key[1], network_id=None, reason="found-gone"
            )
        )
    yield
    out.extend(_nat_and_forwarding_fixes(h, book, desired, emitted, final, follows))
    return out


def _name(x: LinkSpec | LinkState) -> str:
    return x.name


def _key(x: AddrSpec | AddrState) -> tuple[str, str]:
    return x.key


def _ours(x: LinkState) -> bool:
    return x.ours


def _nat_applied(h: str, t: NatTable, drift: bool, follows: bool) -> HostNatApplied:
    """The record of table ``t`` applied on host ``h``; ``follows``: its set of fixed ranges is
    the registry's (every network's range: not listed, :attr:`HostNatApplied.fixed_space`)."""
    return HostNatApplied(
        host=h,
        floating=dict(t.floating),
        snat_ranges=[] if follows else list(t.fixed_ranges),
        drift=drift,
        snat_to=t.snat_to,
        routed_v6={prefix: bridge for bridge, prefix in t.routed_v6},
        fixed_space=follows,
    )


def _says(record: HostNatApplied | None, t: NatTable | None, follows: bool) -> bool:
    """Whether the log's NAT ``record`` says what table ``t`` holds (None, or a record or table
    of nothing: no NAT). ``follows``: this host's fixed ranges are the registry's — a record
    that says so holds whichever they are now; one that lists them (older, or written with
    ``--fixed-range``) holds while the list is the table's."""
    if t is None or t.empty:
        return record is None or not (
            record.floating or record.snat_ranges or record.fixed_space or record.routed_v6
        )
    if record is None:
        return False
    now = _nat_applied(record.host, t, False, False)
    if (record.floating, record.snat_to, record.routed_v6) != (
        now.floating,
        now.snat_to,
        now.routed_v6,
    ):
        return False
    return follows if record.fixed_space else record.snat_ranges == now.snat_ranges


def _registry_moved(prev: HostDesired | None, op: SetNat) -> bool:
    """Whether ``op`` writes the table because the registry's fixed ranges moved, not because
    the kernel's table was changed behind our back: the table desired last pass was another
    (``prev``), or — on a first pass, with nothing before it — the kernel's table differed only
    in its set (a network or pool created while the executor was away; a set edited by hand
    meanwhile cannot be told from that: the record does not list it)."""
    if prev is not None:
        return prev.nat != op.table
    return op.was is not None and replace(op.was, fixed_ranges=op.table.fixed_ranges) == op.table


def space_only(prev: HostDesired | None, desired: HostDesired) -> bool:
    """Whether ``desired`` differs from ``prev`` only in the NAT table's set of fixed ranges: a
    network created anywhere (its range joins every NAT host's set). Then a host whose record
    follows the registry's ranges has nothing to say (nothing of its own changed). Forwarding
    is not compared: an incremental pass's ``prev`` has only the touched networks' (it follows
    from what the host serves, which changes their fragments anyway)."""
    if prev is None or prev.nat.fixed_ranges == desired.nat.fixed_ranges:
        return False
    nat = replace(prev.nat, fixed_ranges=desired.nat.fixed_ranges)
    was = replace(prev, nat=nat, forwarding=desired.forwarding, forwarding_v6=desired.forwarding_v6)
    return was == desired


def _nat_and_forwarding_fixes(
    h: str,
    book: HostBook,
    desired: HostDesired,
    emitted: list[HostEvent],
    final: HostActual,
    follows: bool,
) -> list[HostEvent]:
    """The NAT tables and forwarding as the kernel has them, where the log's record differs:
    a crash between ``nft -f`` (or the sysctl) and its report left the kernel right and the
    record stale, and the next pass, finding nothing to do, never said it (found by review)."""
    out: list[HostEvent] = []
    nat: HostNatApplied | None = book.nat
    forwarding = {4: book.forwarding, 6: book.forwarding_v6}
    for e in emitted:
        if isinstance(e, HostNatApplied):
            nat = e
        elif isinstance(e, HostNatRemoved):
            nat = None
        elif isinstance(e, HostForwardingSet):
            forwarding[e.version] = e.enabled
    t = final.nat if final.nat_intact else None
    if final.nat_intact and not _says(nat, t, follows):
        if t is None or t.empty:
            out.append(HostNatRemoved(host=h, reason="found-gone"))
        else:
            out.append(_nat_applied(h, t, False, follows))
    # Only forwarding this host needs: the executor never turns it off, and a host routing
    # for other reasons is not netledger's to record.
    for version, want, on in ((4, desired.forwarding, final.forwarding),
                              (6, desired.forwarding_v6, final.forwarding_v6)):  # fmt: skip
        if want and on and not forwarding[version]:
            out.append(HostForwardingSet(host=h, enabled=True, drift=False, version=version))
    return out
