"""A dump the kernel marks interrupted (NLM_F_DUMP_INTR) is dumped again; only a whole one is kept.

The kernel builds a dump a bufferful per ``recv``; when the table changed between two it sets
NLM_F_DUMP_INTR on the next message or on the NLMSG_DONE, and the dump may have skipped or
repeated entries. ``RtSocket.dump_raw`` raises :class:`DumpInterrupted` at the end of a marked
dump and ``read_raw`` runs its reader again on a new one (up to ``DUMP_TRIES`` dumps, then that
error; a dump memo's reader begins afresh each time), so a dump memo and a caller's
table only ever keep an unmarked dump — but for the cache's resync, which takes a marked dump
as it is (its journal of notifications mends what changed: ``accept_last``), and the sighting
read, which tries twice (``tries``).

Here the kernel's side is played over a real socket pair by byte-built replies (the flag on a
message, on the NLMSG_DONE alone, on every try), queued before the dump asks: each try's
replies carry the sequence number that try's request will have, and a reader matches replies
by it. tests/executor/test_dump_interrupted_netns.py makes the kernel itself set the flag.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from netledger.executor import nlencode, nlparse
from netledger.executor.cache import KernelCache
from netledger.executor.errors import DumpInterrupted
from netledger.executor.netlink import DUMP_TRIES, RtSocket

NLM_F_MULTI = 0x2
INTR = nlparse.NLM_F_DUMP_INTR
#: one try: the datagrams the kernel sends, each a list of (ifindex, flags) per link message
#: and a final NLMSG_DONE's flags (None: no NLMSG_DONE in that datagram)
Try = list[tuple[list[tuple[int, int]], int | None]]


def _msg(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    length = nlparse.NLMSG_HDR.size + len(payload)
    return nlparse.NLMSG_HDR.pack(length, mtype, flags, seq, 0) + payload + b"\0" * (-length % 4)


def _link(index: int, flags: int, seq: int) -> bytes:
    body = nlencode.new_link(index, f"l{index}", mtu=1500)
    return _msg(nlparse.RTM_NEWLINK, NLM_F_MULTI | flags, seq, body)


def _done(flags: int, seq: int) -> bytes:
    return _msg(nlparse.NLMSG_DONE, NLM_F_MULTI | flags, seq, struct.pack("=i", 0))


class FakeKernel:
    """The peer end of a socket pair an :class:`RtSocket` reads instead of the kernel."""

    def __init__(self, sock: RtSocket) -> None:
        self.sock = sock
        mine, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.settimeout(5)
        sock.sock.close()
        sock.sock = mine

    def answer(self, *tries: Try) -> None:
        """Queue the replies of the next requests, one try each, in order."""
        seq = self.sock.seq
        for t in tries:
            seq += 1
            for links, done in t:
                data = b"".join(_link(i, f, seq) for i, f in links)
                if done is not None:
                    data += _done(done, seq)
                self.peer.send(data)

    def close(self) -> None:
        self.peer.close()
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[FakeKernel]:
    k = FakeKernel(RtSocket())
    try:
        yield k
    finally:
        k.close()


def _indexes(got: list[tuple[bytes, int, int]]) -> list[int]:
    return [nlparse.link(d, a, b).ifindex for d, a, b in got]


def _dump(k: FakeKernel) -> list[tuple[bytes, int, int]]:
    return k.sock.read_raw(nlencode.link_dump(), nlencode.RTM_GETLINK, list)


def test_a_dump_marked_on_a_message_is_dumped_again(fake: FakeKernel) -> None:
    # the first try's second bufferful is marked: a link changed between the two
    fake.answer(
        [([(1, 0), (2, 0)], None), ([(3, INTR), (5, 0)], 0)],
        [([(1, 0), (2, 0)], None), ([(4, 0)], 0)],
    )
    assert _indexes(_dump(fake)) == [1, 2, 4]
    assert fake.sock.interrupted == 1


def test_a_dump_marked_on_its_done_alone_is_dumped_again(fake: FakeKernel) -> None:
    fake.answer([([(1, 0), (2, 0)], INTR)], [([(1, 0), (3, 0)], 0)])
    assert _indexes(_dump(fake)) == [1, 3]
    assert fake.sock.interrupted == 1


def test_a_streamed_dump_tells_its_mark_at_its_end(fake: FakeKernel) -> None:
    """dump_raw hands each message out as it reads it: a mark is known, and raised, once the
    NLMSG_DONE is read — everything was handed out, nothing is left on the socket."""
    fake.answer([([(1, 0), (2, INTR)], None), ([(3, 0)], 0)])
    seen = []
    with pytest.raises(DumpInterrupted) as err:
        for d, a, b in fake.sock.dump_raw(nlencode.link_dump(), nlencode.RTM_GETLINK):
            seen.append(nlparse.link(d, a, b).ifindex)
    assert seen == [1, 2, 3]
    assert err.value.details["tries"] == 1
    fake.answer([([(4, 0)], 0)])
    assert _indexes(_dump(fake)) == [4]


def test_a_clean_dump_is_taken_at_once(fake: FakeKernel) -> None:
    fake.answer([([(1, 0)], None), ([(2, 0)], 0)])
    assert _indexes(_dump(fake)) == [1, 2]
    assert fake.sock.interrupted == 0


def test_a_table_changing_under_every_try_is_an_error_and_the_socket_stays_in_step(
    fake: FakeKernel,
) -> None:
    fake.answer(*([([(1, 0), (2, INTR)], 0)] for _ in range(DUMP_TRIES)))
    with pytest.raises(DumpInterrupted) as err:
        _dump(fake)
    assert err.value.code == "kernel_dump_interrupted"
    assert err.value.details["tries"] == DUMP_TRIES
    assert fake.sock.interrupted == DUMP_TRIES
    # every try was read to its NLMSG_DONE: the next dump reads its own replies
    fake.answer([([(7, 0)], 0)])
    assert _indexes(_dump(fake)) == [7]


def test_the_pyroute2_dump_is_dumped_again_too(fake: FakeKernel) -> None:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    fake.answer([([(1, 0), (2, INTR)], 0)], [([(1, 0), (3, 0)], 0)])
    got = fake.sock.dump(ifinfmsg(), nlencode.RTM_GETLINK)
    assert [m.get_attr("IFLA_IFNAME") for m in got] == ["l1", "l3"]
    assert fake.sock.interrupted == 1


def test_the_cache_and_its_memo_take_a_marked_dump_as_it_is(fake: FakeKernel) -> None:
    """The cache's resync (links, addresses, flood entries) takes a marked dump, not another:
    its journal of notifications applies what changed during it (the sweep's dumps are marked
    by the executor's own changes most of the time on a busy host, and each try is a whole
    dump beside the passes); the memo holds that dump, and the next sweep reads again."""
    cache = KernelCache(None, live=False)
    cache._dumper = fake.sock
    fake.answer(
        [([(1, 0), (2, 0), (3, 0)], None), ([(5, INTR)], 0)],  # links, interrupted: taken
        [([], 0)],  # addresses
        [([], 0)],  # flood entries
    )
    cache.resync()
    assert sorted(cache.links) == [1, 2, 3, 5]
    assert sorted(cache.memo._kept) == [1, 2, 3, 5]
    assert (fake.sock.interrupted, fake.sock.accepted) == (1, 1)
    # the next sweep's dump reads the table as it is then: link 5 gone, 4 new
    decoded = cache.memo.decoded
    fake.answer([([(1, 0), (2, 0), (3, 0), (4, 0)], 0)], [([], 0)], [([], 0)])
    cache.resync()
    assert sorted(cache.links) == [1, 2, 3, 4]
    assert cache.memo.decoded - decoded == 1  # link 4; 1-3 reused from the marked dump
    assert cache.memo.reused == 3
    fake.answer([([(9, 0)], 0)])  # nothing left unread: the socket is in step
    assert _indexes(_dump(fake)) == [9]


def test_a_reader_that_mends_changes_takes_its_last_try_as_it_is(fake: FakeKernel) -> None:
    """``accept_last``: the last of ``tries`` marked dumps is used, not an error (the cache's
    resync: its journal of notifications applies what changed meanwhile)."""
    fake.answer([([(1, 0), (2, INTR)], 0)], [([(1, 0), (3, INTR)], 0)])
    got = fake.sock.read_raw(
        nlencode.link_dump(), nlencode.RTM_GETLINK, list, tries=2, accept_last=True
    )
    assert _indexes(got) == [1, 3]
    assert (fake.sock.interrupted, fake.sock.accepted) == (2, 1)
    fake.answer([([(7, 0)], 0)])  # in step
    assert _indexes(_dump(fake)) == [7]


def test_the_sighting_read_tries_twice_then_reports_nothing(fake: FakeKernel) -> None:
    """The learned MACs: a marked dump may have skipped an instance's MAC, which would read as
    the instance gone — never taken; two tries (the whole FDB each), then the error (the
    poll reports nothing, the next one tries again)."""
    from netledger.executor.kernel import SIGHTING_TRIES, Kernel

    k = Kernel.__new__(Kernel)
    k.sock = fake.sock
    fake.answer(*([([], INTR)] for _ in range(SIGHTING_TRIES)))
    with pytest.raises(DumpInterrupted) as err:
        k.read_learned_macs({1})
    assert err.value.details["tries"] == SIGHTING_TRIES == 2
    assert fake.sock.accepted == 0
