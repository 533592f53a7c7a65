"""``last_messages`` (journal/stream.py): the last message of many subjects at once, by batched
direct gets, more subjects than one request may ask for (nats-server answers at most 1,024).
Real nats-server."""

from __future__ import annotations

import time

from netledger.journal.stream import MULTI_LAST_CHUNK, Connection, last_messages, last_seq


async def test_the_last_message_of_each_subject_up_to_a_sequence(conn: Connection) -> None:
    subjects = [f"netledger.evt.network.lm{i}" for i in range(MULTI_LAST_CHUNK + 200)]
    seqs = {}
    for i, s in enumerate(subjects):
        seqs[s] = (await conn.js.publish(s, f"{i}".encode(), stream=conn.stream)).seq
    before = await last_seq(conn)
    again = (await conn.js.publish(subjects[0], b"again", stream=conn.stream)).seq
    never = "netledger.evt.network.never"

    got = await last_messages(conn, [*subjects, never], await last_seq(conn))
    assert set(got) == set(subjects)  # every chunk answered; a subject without one is left out
    assert {s: (seq, data) for s, (seq, _, data) in got.items()} == {
        **{s: (seqs[s], f"{i}".encode()) for i, s in enumerate(subjects)},
        subjects[0]: (again, b"again"),
    }
    # the stored time, as Unix time (the server's clock: this machine's)
    assert all(abs(t - time.time()) < 3600 for _, t, _ in got.values())

    older = await last_messages(conn, subjects[:1], before)
    assert {s: (seq, data) for s, (seq, _, data) in older.items()} == {
        subjects[0]: (seqs[subjects[0]], b"0")
    }
    assert await last_messages(conn, [], before) == {}
