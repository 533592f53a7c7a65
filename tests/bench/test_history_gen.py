"""The history benchmark's generator (bench/history_gen.py) writes a history that is consistent.

On a real nats-server: a small cloud's history (~3,000 events) is generated with ``verify=True``
(every event built without a decider is also decided by it, and must be equal), then read back
and folded the way the command service folds it: every event decodes, re-encodes to the stored
bytes, belongs on its subject and is folded (no rejection), and the projector rejects none
either; what ``History`` counts matches the stream; no address is left awaiting a release or
looks like a reclaim candidate; and one host's share is exactly what a filtered consumer on its
subjects delivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from netledger.events.codec import decode, encode
from netledger.events.host_events import HostEvent
from netledger.events.reclaim import candidates
from netledger.events.state import State
from netledger.journal.stream import Connection, last_seq
from netledger.projector.query import open_readonly
from netledger.projector.query import state as projection_state
from netledger.projector.runner import project_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "bench"))

from history_gen import Cloud, build_history

SMALL = {"hosts": 12, "networks": 40, "seed": 5}


async def read(conn: Connection, subjects: list[str]) -> list[tuple[int, str, bytes]]:
    """Every message on ``subjects`` (one ordered consumer, filter_subjects), in order."""
    total = await last_seq(conn)
    got: list[tuple[int, str, bytes]] = []
    done = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:
        got.append((msg.metadata.sequence.stream, msg.subject, msg.data))
        if msg.metadata.num_pending == 0 and not done.done():
            done.set_result(None)

    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subjects=subjects)
    sub = await conn.js.subscribe(
        "", cb=cb, ordered_consumer=True, stream=conn.stream, config=config
    )
    await asyncio.wait_for(done, 60)
    await sub.unsubscribe()
    assert got and got[-1][0] <= total
    return got


async def test_history_folds_clean_and_counts_match(conn: Connection, tmp_path: Path) -> None:
    h = await build_history(conn, 3000, verify=True, **SMALL)
    assert h.last_seq >= 3000 and h.last_seq == await last_seq(conn) == h.written
    msgs = await read(conn, ["netledger.evt.>"])
    assert [m[0] for m in msgs] == list(range(1, h.last_seq + 1))

    state = State()
    rejected = []
    types: Counter[str] = Counter()
    subjects: Counter[str] = Counter()
    host_events = 0
    for seq, subject, data in msgs:
        env = decode(data)
        assert encode(env) == data  # the generator's fast encoder is the codec's
        if not env.event.accepts_subject(subject):
            rejected.append((seq, subject, env.type))
            continue
        assert state.apply(seq, subject, env)
        types[env.type] += 1
        subjects[subject] += 1
        host_events += isinstance(env.event, HostEvent)
    assert rejected == []
    assert dict(types) == h.counts
    assert dict(subjects) == h.subject_counts
    assert host_events == h.host_events and h.last_seq - host_events == h.domain_events
    assert 0.5 < h.host_events / h.last_seq < 0.8

    # The live state the stream folds to is the one History describes, and it is quiet.
    live = {
        ip.instance: (n.network_id, ip.address, ip.mac, ip.host)
        for n in state.live_networks()
        for ip in n.fixed.values()
        if ip.allocated
    }
    assert live == {
        x.instance: (x.network_id, x.address, x.mac, x.host) for x in h.instances.values()
    }
    assert len(live) == 4 * SMALL["networks"]
    assert state.awaiting_release == {}
    assert candidates(state, 0.0) == []
    assert sum(f.instance is not None for f in state.pools[h.pool].floating.values()) == sum(
        x.floating is not None for x in h.instances.values()
    )

    # A host's share: what a filtered read of its subjects returns.
    for host in (h.focus_host, h.hosts[-1]):
        share = await read(conn, h.share_subjects(host))
        assert len(share) == h.share(host)
    assert h.focus_share == h.share(h.focus_host) > 0
    assert h.focus_networks == h.networks_of(h.focus_host) != []

    # The projector takes every event too (its domain handlers reject what does not fit).
    db = tmp_path / "p.db"
    assert await project_until(conn, db) == h.last_seq
    with open_readonly(db) as q:
        assert projection_state(q)["rejected"] == 0

    # More churn, appended to the same stream: still consistent, same size of cloud.
    more = await h.extend(conn, 500)
    assert more.last_seq >= h.last_seq + 500 and more.last_seq == await last_seq(conn)
    assert len(more.instances) == len(h.instances)


async def test_history_is_deterministic() -> None:
    """Same seed, same messages (subjects, payloads, message ids); another seed, others."""

    async def digest_of(seed: int) -> str:
        d = hashlib.sha256()

        def sink(batch: list[tuple[str, bytes, str]]) -> None:
            for subject, data, msg_id in batch:
                d.update(f"{subject}|{msg_id}|".encode() + data)

        cloud = Cloud(**{**SMALL, "seed": seed})
        cloud.sink = sink
        await cloud.build(None, 2000)
        return d.hexdigest()

    assert await digest_of(1) == await digest_of(1) != await digest_of(2)


async def test_the_fold_of_a_history_is_the_same_by_either_decoder() -> None:
    """The service's fold (decode_fast, State.fold_message) of a generated history equals the
    generator's own fold (State.apply of what it decided) to the byte of a snapshot; with
    messages that cannot be folded mixed in, it equals the fold of codec.decode's envelopes,
    the same messages refused for the same reasons."""
    import msgpack

    from netledger.events.errors import DecodeError
    from netledger.events.snapshot import state_to_wire
    from netledger.events.wire_fast import decode_fast

    stored: list[tuple[str, bytes]] = []
    cloud = Cloud(**SMALL)
    cloud.sink = lambda batch: stored.extend((s, d) for s, d, _ in batch)
    await cloud.build(None, 3000)
    clean = [(seq, s, d) for seq, (s, d) in enumerate(stored, start=1)]
    mixed: list[tuple[int, str, bytes]] = []
    for i, (subject, data) in enumerate(stored):
        mixed.append((len(mixed) + 1, subject, data))
        if i % 500 == 7:  # another host's subject, a cut message, a wrong field type
            mixed.append((len(mixed) + 1, "netledger.evt.host.other", data))
            mixed.append((len(mixed) + 1, subject, data[:-3]))
            obj = msgpack.unpackb(data)
            obj["data"][next(iter(obj["data"]))] = 1.5
            mixed.append((len(mixed) + 1, subject, msgpack.packb(obj)))

    def fold(decoder: Any, log: list[tuple[int, str, bytes]]) -> tuple[bytes, list[Any]]:
        state = State()
        refused = []
        for seq, subject, data in log:
            try:
                env, why = decoder(data), "undecodable"
            except DecodeError as exc:
                env, why = None, exc.message
            reason = state.fold_message(seq, subject, env, why)
            if reason is not None:
                refused.append((seq, reason))
        return msgpack.packb(state_to_wire(state)), refused

    assert fold(decode_fast, clean) == (msgpack.packb(state_to_wire(cloud.state)), [])
    fast = fold(decode_fast, mixed)
    assert fast == fold(decode, mixed)
    assert len(fast[1]) == 3 * len(range(7, len(stored), 500))
