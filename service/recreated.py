"""The OCC check of a network created under an id the fold knew before (never decided).

The deciders never give an id out twice (``next_network_number`` only grows), but the fold
takes a log that creates a deleted id again (events/state.py ``recreated``). The fold forgets
a deleted network's subject once its reader has read past it (events/prune.py), so for such a
network it may no longer know the subject's last message — the older network's — which the
first append there must name (``Nats-Expected-Last-Subject-Sequence``): with none, every
attempt would be refused as a conflict. The log knows: :func:`learn_recreated` asks it for
the subject's last message at or before the re-creation (a batched direct get) and keeps it
in ``State.learned``, what ``State.seq_of`` answers until the fold holds a message there. The
lanes call it before they decide, only while such a network lives, and drop what was learned on
a conflict (service/lanes.py): a direct get may be answered by a stream replica that has not
stored the log that far (an older message, or none), and kept, that answer failed every append
on the network until a restart.
"""

from __future__ import annotations

import logging

from netledger.events.ids import network_subject
from netledger.events.state import State
from netledger.journal.stream import Connection, last_messages

log = logging.getLogger("netledger.service")


async def learn_recreated(conn: Connection, state: State) -> None:
    """Learn the last message of each re-created network's subject the fold forgot."""
    todo = [
        (network_id, created)
        for network_id, created in state.recreated.items()
        if network_subject(network_id) not in state.subject_seq
        and network_subject(network_id) not in state.learned
    ]
    for network_id, created in todo:
        subject = network_subject(network_id)
        try:
            got = await last_messages(conn, [subject], created)
        except Exception as exc:  # its append is refused as a conflict, and tried again
            log.warning("cannot read the last message on %s: %s", subject, exc)
            return
        if state.recreated.get(network_id) == created:  # (deleted again meanwhile: not)
            state.learned[subject] = got[subject][0] if subject in got else 0
