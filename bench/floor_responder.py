"""A responder that decides nothing: the floor under the command service's allocation rate.

    .venv/bin/python bench/floor_responder.py NATS_URL [--no-follow | --direct]

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

It prints ``ready`` once it serves; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from alloc import RAW_PREFIX, payload, raw_connect

from netledger.journal.append import _ack_seq
from netledger.journal.follow import Follower
from netledger.journal.natsclient import Reply, header_block
from netledger.journal.stream import Connection
from netledger.service.eventloop import install

SUBJECT = "bench.floor.cmd"
SUBJECT_NO_FOLLOW = "bench.floor-nf.cmd"
SUBJECT_DIRECT = "bench.floor-direct.cmd"
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
    else:
        asyncio.run(serve(sys.argv[1], follow="--no-follow" not in sys.argv[2:]))
