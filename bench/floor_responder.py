"""A responder that decides nothing: the floor under the command service's allocation rate.

    .venv/bin/python bench/floor_responder.py NATS_URL
        [--no-follow | --direct | --group | --group-atomic | --group-direct]

Started by bench/alloc.py as a process of its own, as the command service is (uvloop, our NATS
client). Each request on ``bench.floor.cmd.<lane>`` (its data is not read); the responder appends one
envelope of the size of an allocation's to that lane's subject with the OCC header and a message
id — exactly the publish the service makes — waits for the ack and replies (all from callbacks
in the read loop: not even a task per request). Like the service, it follows what it appends
with a :class:`Follower` (every appended message is read back and decoded), and does nothing
else (with ``--no-follow`` not even that, on ``bench.floor-nf.cmd.<lane>``: the floor of a
service that would not read back): no parsing of the request, no decision, no fold, no bookkeeping. What it
reaches on this machine is the most any Python service answering from the publish ack can: the
service's 1-client and 16 x 16 rates are reported against it too (issue 15). It appends to the
twin stream of the raw limits (bench/alloc.py ``RAW_STREAM``), which nothing else follows.

With ``--direct`` (on ``bench.floor-direct.cmd.<lane>``) it measures another protocol, one this
project does not have: the append goes out with the *client's* inbox as its reply subject, so
the server's ack answers the client without passing the responder again (4 messages a command
instead of 6, as a raw publish-ack's 2). The responder then never sees the ack: it learns each
lane's last sequence from its Follower and holds a lane's next request until the previous
append is read back (the OCC header needs it). The client gets JetStream's ack (JSON) as its
answer. The floor of that design, for issue 15's 1-client goal (bench/README.md).

With ``--group``, ``--group-atomic`` and ``--group-direct`` it is the floor under many
clients on one network (issue 15's "16 clients, 1 network" goal): a lane's requests that arrive
while its previous commit is in the air wait and are committed together — as a pipelined chain
(what the service's lane sends at that load), as one atomic batch, or as a chain whose acks go
straight to the clients (see each function).

It prints ``ready`` once it serves; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

from alloc import RAW_PREFIX, payload, raw_connect

from netledger.journal.append import _ack_seq
from netledger.journal.follow import Follower
from netledger.journal.natsclient import Reply, header_block
from netledger.journal.stream import Connection
from netledger.service.eventloop import install

SUBJECT = "bench.floor.cmd"
SUBJECT_NO_FOLLOW = "bench.floor-nf.cmd"
SUBJECT_DIRECT = "bench.floor-direct.cmd"
SUBJECT_GROUP = "bench.floor-group.cmd"
SUBJECT_GROUP_ATOMIC = "bench.floor-groupa.cmd"
SUBJECT_GROUP_DIRECT = "bench.floor-groupd.cmd"
_OK = b"\x82\xa2ok\xc3\xa6result\x80"  # msgpack {"ok": True, "result": {}}


async def serve(url: str, follow: bool = True) -> None:
    conn = await raw_connect(url)
    nc = conn.nc
    await nc.ready_for_requests()
    prefix = f"{RAW_PREFIX}.floor{os.getpid()}-"
    if follow:
        await Follower(conn, lambda *a: None, start_seq=1, subject=f"{prefix}>").start()
    served = SUBJECT if follow else SUBJECT_NO_FOLLOW
    last: dict[bytes, int] = {}
    count = 0

    def on_request(subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        nonlocal count
        count += 1
        lane = subject[len(served) + 1 :]
        to = reply.decode()
        stored = prefix + lane.decode()
        hdr = header_block(
            {
                "Nats-Expected-Last-Subject-Sequence": str(last.get(lane, 0)),
                "Nats-Msg-Id": f"{stored}-{count}:0",
            }
        )
        _, fut = nc.start_request_nowait(stored, payload(count, "floor"), hdr)

        def acked(fut: asyncio.Future[Reply]) -> None:
            last[lane] = _ack_seq(fut.result()[0])
            nc.publish_nowait(to, _OK)
            nc.write_now()

        fut.add_done_callback(acked)

    await nc.subscribe_direct(f"{served}.>", on_request)
    await nc.flush()
    await _serving(conn)


async def serve_direct(url: str) -> None:
    """The ack straight to the client (``--direct``, see the module's docstring)."""
    conn = await raw_connect(url)
    nc = conn.nc
    prefix = f"{RAW_PREFIX}.floord{os.getpid()}."
    last: dict[str, int] = {}
    held: dict[str, list[str]] = {}  # per lane: the clients' inboxes waiting for a read-back
    busy: set[str] = set()  # lanes with an append not yet read back
    count = 0

    def append(lane: str, to: str) -> None:
        nonlocal count
        count += 1
        stored = prefix + lane
        hdr = header_block(
            {
                "Nats-Expected-Last-Subject-Sequence": str(last.get(lane, 0)),
                "Nats-Msg-Id": f"{stored}-{count}:0",
            }
        )
        busy.add(lane)
        nc.publish_nowait(stored, payload(count, "floor"), to, hdr)
        nc.write_now()

    def on_event(seq: int, subject: str, *_: object) -> None:
        lane = subject[len(prefix) :]
        last[lane] = seq
        busy.discard(lane)
        if held.get(lane):
            append(lane, held[lane].pop(0))

    await Follower(conn, on_event, start_seq=1, subject=f"{prefix}>").start()

    def on_request(subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        lane = subject[len(SUBJECT_DIRECT) + 1 :].decode()
        if lane in busy:
            held.setdefault(lane, []).append(reply.decode())
        else:
            append(lane, reply.decode())

    await nc.subscribe_direct(f"{SUBJECT_DIRECT}.>", on_request)
    await nc.flush()
    await _serving(conn)


def link(prev: str, last: int, mid: str) -> bytes:
    """A pipelined chain's link's headers (as ``Appender.append_chain``): the first (``prev``
    empty) checks the subject's last sequence, every later one the previous link's id."""
    check = (
        {"Nats-Expected-Last-Msg-Id": prev}
        if prev
        else {"Nats-Expected-Last-Subject-Sequence": str(last)}
    )
    return header_block({**check, "Nats-Msg-Id": mid})


async def serve_group(url: str, atomic: bool = False) -> None:
    """Group commit on one lane (``--group``, see the module's docstring): the requests that
    arrive while a lane's chain is in the air wait, and go as its next chain when the last ack
    comes — what the command service's lane sends with <= 16 requests in flight
    (``Appender.append_chain``: the first link with the subject OCC header, every later one
    with ``Nats-Expected-Last-Msg-Id`` = the previous link's id); each client answered from its
    own link's ack. A Follower reads back what it appends, as the service does. ``atomic``
    (``--group-atomic``): the waiting requests go as one atomic batch instead (the OCC header
    on its first message, the commit on its last), every client answered from the commit's
    ack — what the lane sends from ``batch_threshold`` events on."""
    conn = await raw_connect(url)
    nc = conn.nc
    await nc.ready_for_requests()
    prefix = f"{RAW_PREFIX}.floorg{os.getpid()}-"
    served = SUBJECT_GROUP_ATOMIC if atomic else SUBJECT_GROUP
    await Follower(conn, lambda *a: None, start_seq=1, subject=f"{prefix}>").start()
    last: dict[bytes, int] = {}
    waiting: dict[bytes, list[str]] = {}  # per lane: the clients' inboxes for its next chain
    busy: set[bytes] = set()  # lanes with a chain in the air
    count = 0

    def send(lane: bytes) -> None:
        nonlocal count
        inboxes, waiting[lane] = waiting[lane], []
        busy.add(lane)
        stored = prefix + lane.decode()
        left = len(inboxes)
        prev = ""
        for to in inboxes:
            count += 1
            mid = f"{stored}-{count}:0"
            hdr, prev = link(prev, last.get(lane, 0), mid), mid
            _, fut = nc.start_request_nowait(stored, payload(count, "floor"), hdr)

            def acked(fut: asyncio.Future[Reply], to: str = to) -> None:
                nonlocal left
                seq = _ack_seq(fut.result()[0])
                nc.publish_nowait(to, _OK)
                nc.write_now()
                left -= 1
                if left == 0:  # the chain's last ack (acks come in order): the next chain
                    last[lane] = seq
                    busy.discard(lane)
                    if waiting[lane]:
                        send(lane)

            fut.add_done_callback(acked)
        nc.write_now()

    def send_atomic(lane: bytes) -> None:
        nonlocal count
        inboxes, waiting[lane] = waiting[lane], []
        busy.add(lane)
        stored = prefix + lane.decode()
        batch = uuid.uuid4().hex
        for i, _ in enumerate(inboxes, 1):
            count += 1
            h = {
                "Nats-Msg-Id": f"{stored}-{count}:0",
                "Nats-Batch-Id": batch,
                "Nats-Batch-Sequence": str(i),
            }
            if i == 1:
                h["Nats-Expected-Last-Subject-Sequence"] = str(last.get(lane, 0))
            if i < len(inboxes):
                nc.publish_nowait(stored, payload(count, "floor"), "", header_block(h))
                continue
            h["Nats-Batch-Commit"] = "1"
            _, fut = nc.start_request_nowait(stored, payload(count, "floor"), header_block(h))

            def committed(fut: asyncio.Future[Reply]) -> None:
                last[lane] = _ack_seq(fut.result()[0])
                for to in inboxes:
                    nc.publish_nowait(to, _OK)
                nc.write_now()
                busy.discard(lane)
                if waiting[lane]:
                    send_atomic(lane)

            fut.add_done_callback(committed)
        nc.write_now()

    go = send_atomic if atomic else send

    def on_request(subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        lane = subject[len(served) + 1 :]
        waiting.setdefault(lane, []).append(reply.decode())
        if lane not in busy:
            go(lane)

    await nc.subscribe_direct(f"{served}.>", on_request)
    await nc.flush()
    await _serving(conn)


async def serve_group_direct(url: str) -> None:
    """Group commit with the acks straight to the clients (``--group-direct``): the chain of
    :func:`serve_group`, every link sent with its client's inbox as the reply subject (the
    server's ack is the answer, as ``--direct``); the responder learns that a chain landed
    from its Follower (its last link read back) and only then sends the lane's next one."""
    conn = await raw_connect(url)
    nc = conn.nc
    prefix = f"{RAW_PREFIX}.floorgd{os.getpid()}."
    last: dict[str, int] = {}
    waiting: dict[str, list[str]] = {}
    left: dict[str, int] = {}  # per lane: links of the chain in the air not read back yet
    count = 0

    def send(lane: str) -> None:
        nonlocal count
        inboxes, waiting[lane] = waiting[lane], []
        left[lane] = len(inboxes)
        stored = prefix + lane
        prev = ""
        for to in inboxes:
            count += 1
            mid = f"{stored}-{count}:0"
            hdr, prev = link(prev, last.get(lane, 0), mid), mid
            nc.publish_nowait(stored, payload(count, "floor"), to, hdr)
        nc.write_now()

    def on_event(seq: int, subject: str, *_: object) -> None:
        lane = subject[len(prefix) :]
        last[lane] = seq
        left[lane] -= 1
        if left[lane] == 0 and waiting.get(lane):
            send(lane)

    await Follower(conn, on_event, start_seq=1, subject=f"{prefix}>").start()

    def on_request(subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        lane = subject[len(SUBJECT_GROUP_DIRECT) + 1 :].decode()
        waiting.setdefault(lane, []).append(reply.decode())
        if not left.get(lane):
            send(lane)

    await nc.subscribe_direct(f"{SUBJECT_GROUP_DIRECT}.>", on_request)
    await nc.flush()
    await _serving(conn)


async def _serving(conn: Connection) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await conn.close()


if __name__ == "__main__":
    install()
    if "--direct" in sys.argv[2:]:
        asyncio.run(serve_direct(sys.argv[1]))
    elif "--group-direct" in sys.argv[2:]:
        asyncio.run(serve_group_direct(sys.argv[1]))
    elif "--group" in sys.argv[2:] or "--group-atomic" in sys.argv[2:]:
        asyncio.run(serve_group(sys.argv[1], atomic="--group-atomic" in sys.argv[2:]))
    else:
        asyncio.run(serve(sys.argv[1], follow="--no-follow" not in sys.argv[2:]))
