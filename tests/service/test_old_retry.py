"""A retry of ``floating_ip.allocate`` older than both what the service remembers (``seen``:
its latest ``SEEN_COMMANDS``; one here) and the log's duplicate window (one second here) is
found in the log by the time its UUIDv7 command id carries (service/old_retry.py) and answered
as a retry: the first answer while it holds, else ``command_id_reused``. Decided as a new
command, it allocated a second floating IP (review h134). Real nats-server, real command
service."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from netledger.events.errors import CommandIdReused
from netledger.journal.stream import Connection, last_seq
from netledger.service import service as service_module
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

#: the stream's duplicate window in these tests (seconds)
WINDOW = 1.0


@pytest.fixture
async def forgetful(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CommandService]:
    """A service remembering one command, on a stream whose duplicate window is short (read by
    the service at its start)."""
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    info = await conn.js.stream_info(conn.stream)
    info.config.duplicate_window = WINDOW
    await conn.js.update_stream(info.config)
    svc = CommandService(conn)
    await svc.start()
    assert svc.duplicate_window == WINDOW
    try:
        yield svc
    finally:
        await svc.close()


def floating(service: CommandService, project: str) -> list[str]:
    return sorted(
        addr
        for p in service.state.pools.values()
        for addr, f in p.floating.items()
        if f is not None and f.project == project
    )


async def past_window(c: Client, service: CommandService, command_id: str) -> None:
    """Another command (``command_id`` leaves ``seen``), then the duplicate window goes by."""
    await c.request("floating_ip.pool_create", {"pool": "other", "cidr": "203.0.113.0/28"})
    assert command_id not in service.seen
    await asyncio.sleep(WINDOW * 2)


async def test_a_forgotten_retry_past_the_window_gets_its_first_floating_ip(
    conn: Connection, forgetful: CommandService
) -> None:
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    cid = new_command_id()
    first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    again = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)

    assert again == first
    assert await last_seq(conn) == top, "the retry stored something"
    assert floating(forgetful, "p1") == [first["address"]]
    assert forgetful.stats.old_id_lookups >= 1


async def test_a_forgotten_retry_of_a_floating_ip_another_project_holds_now_is_refused(
    conn: Connection, forgetful: CommandService
) -> None:
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    cid = new_command_id()
    first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)
    await c.request("floating_ip.deallocate", {"address": first["address"], "project": "p1"})
    taken = await c.request("floating_ip.allocate", {"project": "p2"})
    assert taken["address"] == first["address"]  # (the first free one again)
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    with pytest.raises(CommandIdReused) as err:
        await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)

    assert err.value.details["held_by"] == "p2"
    assert err.value.details["address"] == first["address"]
    assert await last_seq(conn) == top
    assert floating(forgetful, "p1") == []


async def test_a_forgotten_retry_of_a_floating_ip_deallocated_since_is_refused(
    conn: Connection, forgetful: CommandService
) -> None:
    """Free again: what undid it is forgotten too (as inside the duplicate window)."""
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    cid = new_command_id()
    first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)
    await c.request("floating_ip.deallocate", {"address": first["address"], "project": "p1"})
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    with pytest.raises(CommandIdReused) as err:
        await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)

    assert err.value.details["address"] == first["address"]
    assert "held_by" not in err.value.details
    assert await last_seq(conn) == top
    assert floating(forgetful, "p1") == []


async def test_an_id_that_is_no_uuidv7_is_decided_again_as_before(
    conn: Connection, forgetful: CommandService
) -> None:
    """A client's own id (``--command-id``) carries no time: nothing finds its first attempt,
    and the retry allocates another floating IP (docs/domain.md, "Retries")."""
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-p1")
    await past_window(c, forgetful, "fa-p1")
    lookups = forgetful.stats.old_id_lookups

    again = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-p1")

    assert again["address"] != first["address"]
    assert floating(forgetful, "p1") == sorted([first["address"], again["address"]])
    assert forgetful.stats.old_id_lookups == lookups


def _uuid7_at(seconds: float) -> str:
    """A UUIDv7 made at ``seconds`` (a client whose clock says so)."""
    ms = int(seconds * 1000) & (1 << 48) - 1
    return uuid.UUID(int=ms << 80 | 7 << 76 | 0b10 << 62 | 12345).hex


async def test_new_commands_cost_no_lookup_and_an_id_from_a_clock_behind_is_decided_as_new(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the log's own duplicate window (two minutes), a command whose id is new is never
    looked up, however little the service remembers; one whose id says hours ago (a client
    clock behind) is looked up once, finds nothing, and is decided as a new command."""
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    for i in range(5):
        await c.request("floating_ip.allocate", {"project": f"p{i}"})
    assert service.stats.old_id_lookups == 0

    behind = _uuid7_at(time.time() - 3 * 3600)
    got = await c.request("floating_ip.allocate", {"project": "late"}, command_id=behind)

    assert floating(service, "late") == [got["address"]]
    assert service.stats.old_id_lookups == 1
    assert service.stats.old_id_scanned <= 1  # (the read stops at the first message past it)


async def test_after_a_start_from_a_snapshot_a_forgotten_retry_is_found_too(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from a snapshot, the service knows nothing of what its ``seen`` let go before:
    what came before its oldest command may be forgotten, and is looked up."""
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    info = await conn.js.stream_info(conn.stream)
    info.config.duplicate_window = WINDOW
    await conn.js.update_stream(info.config)
    policy = SnapshotPolicy(every_events=0, fork=False)
    c = Client(conn)
    cid = new_command_id()
    svc = CommandService(conn, reap_interval=None, snapshots=policy)
    await svc.start()
    try:
        await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
        first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)
        await past_window(c, svc, cid)
        assert svc.snapshotter is not None and await svc.snapshotter.write() is not None
    finally:
        await svc.close()
    top = await last_seq(conn)

    again = CommandService(conn, reap_interval=None, snapshots=policy)
    await again.start()
    try:
        assert again.forgotten_last is None and cid not in again.seen
        got = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)
        assert got == first
        assert await last_seq(conn) == top
        assert floating(again, "p1") == [first["address"]]
    finally:
        await again.close()


async def test_a_first_attempt_found_but_not_read_back_is_never_decided_as_new(
    conn: Connection, forgetful: CommandService, nats_url: str
) -> None:
    """The lookup found the first attempt, then the log could not be read (review h140):
    ``_recall`` kept what it had read (nothing), and the command was decided as new — a second
    floating IP. Now a strict read raises and the command is refused ``log_unavailable``
    (not applied: safe to retry under the same id)."""
    from netledger.events.codec import SYSTEM
    from netledger.events.commands import FloatingIpAllocate, Request
    from netledger.journal.stream import connect

    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    cid = new_command_id()
    await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)
    first = await last_seq(conn)
    req = Request(FloatingIpAllocate("p1"), cid, SYSTEM)
    gone = await connect(nats_url, name="gone")
    await gone.close()
    real = forgetful.conn
    forgetful.conn = gone  # the log away from here on
    try:
        with pytest.raises(Exception):  # noqa: B017 (whatever a closed connection raises)
            await forgetful._recall(req, first, strict=True)
        assert await forgetful._recall(req, first) is False  # as before: what was read
    finally:
        forgetful.conn = real
    assert await forgetful._recall(req, first, strict=True) is True
