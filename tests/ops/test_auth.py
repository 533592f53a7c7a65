"""Per-role credentials from ``netledger auth init`` on a real nats-server.

Every role is checked both ways: what it must be able to do, and that the server refuses
(a permissions violation, the stream unchanged) what it must not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from nats.js.api import ConsumerConfig

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.codec import Actor, Envelope, encode
from netledger.events.errors import FloatingIpNotOwned, Forbidden
from netledger.events.types import FixedIpAllocated
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.ops.auth import embedded_extra_config, read_credentials
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.fault_helpers import NETLEDGER, read_all


@dataclass
class Secured:
    server: EmbeddedNats
    creds: dict[str, dict[str, Any]]
    files: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    out = tmp_path / "auth"
    p = subprocess.run(
        [
            *(NETLEDGER, "auth", "init", "--out", str(out)),
            *("--hosts", "h1,h2", "--projects", "p1,p2", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["roles"]["executor-h1"] == "executor"
    assert info["roles"]["client-p1"] == "client"
    assert all(os.stat(f).st_mode & 0o077 == 0 for f in info["credentials"].values())
    data = tmp_path / "nats"
    server = EmbeddedNats(
        data,
        free_port(),
        sync_interval="default",
        extra_config=embedded_extra_config(info["config"], data),
    )
    server.start()
    try:
        creds = {u: read_credentials(f) for u, f in info["credentials"].items()}
        yield Secured(server, creds, info["credentials"])
    finally:
        server.stop()


@pytest.fixture
async def svc(secured: Secured) -> AsyncIterator[tuple[Connection, CommandService]]:
    """The command service connected with the service credentials (it creates the stream)."""
    conn = await connect(secured.url, name="service", **secured.creds["service"])
    await ensure_stream(conn)
    service = CommandService(conn)
    await service.start()
    try:
        yield conn, service
    finally:
        await service.close()
        await conn.close()


class Raw:
    """A plain nats-py connection that records the errors the server sends (violations;
    nats-py hands them over lower-cased)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None

    async def open(self, url: str, creds: dict[str, Any]) -> Raw:
        async def err(e: Exception) -> None:
            self.errors.append(str(e))

        self.nc = await nats.connect(url, error_cb=err, max_reconnect_attempts=0, **creds)
        return self

    async def violation(self, subject: str, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(
                "permissions violation" in e.lower() and subject.lower() in e.lower()
                for e in self.errors
            ):
                return True
            await asyncio.sleep(0.05)
        return False

    async def close(self) -> None:
        await self.nc.close()


def fixed_ip_event(network_id: str, address: str) -> bytes:
    ev = FixedIpAllocated(
        network_id=network_id,
        address=address,
        instance="forged",
        mac="02:16:3e:00:00:01",
        host="h1",
        project=None,
    )
    return encode(Envelope(ev, "forged:0", "forged", time.time(), Actor(role="system")))


async def _network(conn: Connection, secured: Secured) -> dict[str, Any]:
    # Creating networks is an admin command: the admin user sends it on the admin subject.
    c = await Client.connect(secured.url, **secured.creds["admin"])
    try:
        [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat")
        await c.allocate_fixed_ip("i-1", network_id=net["id"], host="h1")
        return net
    finally:
        await c.close()


async def test_executor_cannot_forge_a_fixed_ip(secured: Secured, svc: Any) -> None:
    conn, _ = svc
    net = await _network(conn, secured)
    subject = f"netledger.evt.network.{net['id']}"
    before = await last_seq(conn)
    raw = await Raw().open(secured.url, secured.creds["executor-h1"])
    try:
        js = raw.nc.jetstream(timeout=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(subject, fixed_ip_event(net["id"], "10.9.0.9"))
        assert await raw.violation(subject)
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("netledger.evt.host.h2", b"not my host")
        assert await raw.violation("netledger.evt.host.h2")
        assert await last_seq(conn) == before
        # Its own host subject is writable, and it can read the log (ordered consumer).
        ack = await js.publish("netledger.evt.host.h1", b"mine")
        assert ack.seq == before + 1
    finally:
        await raw.close()
    ex = await connect(secured.url, name="executor", **secured.creds["executor-h1"])
    try:
        events = await read_all(ex)
        assert [s for s, _, _ in events] == list(range(1, before + 2))
    finally:
        await ex.close()


async def test_executor_consumer_cannot_deliver_into_the_stream(secured: Secured, svc: Any) -> None:
    """Consumer creation is allowed to readers; a push consumer delivering onto an event
    subject would republish the log into itself: JetStream refuses the cycle."""
    conn, _ = svc
    await _network(conn, secured)
    before = await last_seq(conn)
    ex = await connect(secured.url, name="executor", **secured.creds["executor-h1"])
    try:
        with pytest.raises(nats.js.errors.APIError):
            await ex.js.add_consumer(
                conn.stream, ConsumerConfig(deliver_subject="netledger.evt.network.evil")
            )
        await asyncio.sleep(0.3)
        assert await last_seq(conn) == before
    finally:
        await ex.close()


async def test_client_may_only_send_commands(secured: Secured, svc: Any) -> None:
    conn, _ = svc
    await _network(conn, secured)
    before = await last_seq(conn)
    raw = await Raw().open(secured.url, secured.creds["client"])
    try:
        js = raw.nc.jetstream(timeout=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("netledger.evt.registry", b"forged")
        assert await raw.violation("netledger.evt.registry")
        # Nor read the log, nor touch the JetStream API.
        with pytest.raises(nats.errors.TimeoutError):
            await js.stream_info(conn.stream)
        assert await raw.violation("$JS.API.STREAM.INFO.NETLEDGER")
        # Nor send a command on the admin subject (acting as admin is for the admin user).
        with pytest.raises(nats.errors.TimeoutError):
            await raw.nc.request("netledger.admin.cmd.network.list", b"\x80", timeout=0.5)
        assert await raw.violation("netledger.admin.cmd.network.list")
        # Nor answer commands in the service's place.
        await raw.nc.subscribe("netledger.cmd.>", queue="netledger-command")
        assert await raw.violation('subscription to "netledger.cmd.>"')
    finally:
        await raw.close()
    assert await last_seq(conn) == before


async def test_auditor_replays_but_cannot_write(secured: Secured, svc: Any) -> None:
    conn, _ = svc
    await _network(conn, secured)
    before = await last_seq(conn)
    aud = await connect(secured.url, name="auditor", **secured.creds["auditor"])
    try:
        events = await read_all(aud)
        assert [s for s, _, _ in events] == list(range(1, before + 1))
        assert all(env is not None for _, _, env in events)
        last = await aud.js.get_last_msg(conn.stream, events[-1][1], direct=True)
        assert last.seq == before
    finally:
        await aud.close()
    raw = await Raw().open(secured.url, secured.creds["auditor"])
    try:
        js = raw.nc.jetstream(timeout=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("netledger.evt.network.1", b"x")
        assert await raw.violation("netledger.evt.network.1")
        with pytest.raises(nats.errors.TimeoutError):
            await js.purge_stream(conn.stream)
        assert await raw.violation("$JS.API.STREAM.PURGE.NETLEDGER")
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream(conn.stream)
        assert await raw.violation("$JS.API.STREAM.DELETE.NETLEDGER")
    finally:
        await raw.close()
    assert await last_seq(conn) == before


async def test_service_cannot_write_host_subjects(secured: Secured, svc: Any) -> None:
    conn, _ = svc
    before = await last_seq(conn)
    raw = await Raw().open(secured.url, secured.creds["service"])
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await raw.nc.jetstream(timeout=0.5).publish("netledger.evt.host.h1", b"x")
        assert await raw.violation("netledger.evt.host.h1")
    finally:
        await raw.close()
    assert await last_seq(conn) == before


async def test_member_cannot_touch_another_projects_floating_ip(secured: Secured, svc: Any) -> None:
    conn, _ = svc
    admin = await Client.connect(secured.url, **secured.creds["admin"])
    try:
        nets = await admin.create_networks(
            label="v", cidr="10.20.0.0/16", num_networks=2, mode="vlan"
        )
        await admin.request("floating_ip.pool_create", {"pool": "pub", "cidr": "203.0.113.0/28"})
    finally:
        await admin.close()
    creds = secured.creds["client"]
    p1 = await Client.connect(secured.url, Actor(project="p1", role="member"), **creds)
    p2 = await Client.connect(secured.url, Actor(project="p2", role="member"), **creds)
    try:
        a = await p1.allocate_fixed_ip("i-a", project="p1", host="h1")
        b = await p2.allocate_fixed_ip("i-b", project="p2", host="h1")
        assert a["network_id"] != b["network_id"]
        assert {a["network_id"], b["network_id"]} <= {n["id"] for n in nets}
        f = await p1.request("floating_ip.allocate", {"project": "p1"})
        before = await last_seq(conn)
        # p2 names the address with its own project: not its floating IP.
        with pytest.raises(FloatingIpNotOwned):
            await p2.request(
                "floating_ip.associate",
                {"address": f["address"], "fixed_address": b["address"], "project": "p2"},
            )
        # p2 claims to act for p1: its actor is p2, so it is forbidden.
        for name, args in [
            ("floating_ip.associate", {"fixed_address": a["address"]}),
            ("floating_ip.disassociate", {}),
            ("floating_ip.deallocate", {}),
        ]:
            with pytest.raises(Forbidden):
                await p2.request(name, {"address": f["address"], "project": "p1", **args})
        with pytest.raises(Forbidden):
            await p2.allocate_fixed_ip("i-c", project="p1")
        with pytest.raises(Forbidden):
            await p2.request("network.create", {"label": "x", "cidr": "10.99.0.0/24"})
        assert await last_seq(conn) == before
        # The owner can.
        await p1.request(
            "floating_ip.associate",
            {"address": f["address"], "fixed_address": a["address"], "project": "p1"},
        )
        # the association and its mapping on the network's subject (events/placement.py)
        assert await last_seq(conn) == before + 2
    finally:
        await p1.close()
        await p2.close()


def test_credentials_file_works_with_the_cli(secured: Secured, tmp_path: Path) -> None:
    """The .env file is what the CLI reads from its environment (systemd EnvironmentFile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLEDGER_")}
    for line in Path(secured.files["service"]).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    p = subprocess.Popen(
        [NETLEDGER, "--nats", secured.url, "serve", "--no-projector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().startswith("netledger ready")
        c = read_credentials(secured.files["admin"])
        out = subprocess.run(
            [
                *(
                    NETLEDGER,
                    "--nats",
                    secured.url,
                    "--user",
                    c["user"],
                    "--password",
                    c["password"],
                ),
                *("--json", "network", "create", "--label", "x", "--cidr", "10.5.0.0/24"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)[0]["cidr"] == "10.5.0.0/24"
        wrong = subprocess.run(
            [
                *(NETLEDGER, "--nats", secured.url, "--user", "client", "--password", "nope"),
                *("--json", "network", "list"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong.returncode == 1
        error = json.loads(wrong.stdout)["error"]
        assert error["code"] == "unavailable"
        # said at once and in words (it retried the refused password for 5 s and then said
        # only that the server closed the connection)
        assert "the server refused the credentials" in error["message"], error
        assert "Authorization Violation" in error["message"], error
    finally:
        p.terminate()
        p.wait(15)


def _env_from(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLEDGER_")}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


async def test_project_credentials_act_only_for_their_project(secured: Secured, svc: Any) -> None:
    """``client-p1`` credentials: NATS lets them publish only on p1's command subject, and the
    service refuses a request there that acts for anyone but p1 — a forged actor gets nowhere."""
    conn, _ = svc
    admin = await Client.connect(secured.url, **secured.creds["admin"])
    try:
        await admin.create_networks(label="v", cidr="10.21.0.0/16", num_networks=2, mode="vlan")
    finally:
        await admin.close()
    creds = secured.creds["client-p1"]
    mine = await Client.connect(secured.url, Actor(project="p1", role="member"), **creds)
    try:
        a = await mine.allocate_fixed_ip("i-a", project="p1", host="h1")
        assert a["address"].startswith("10.21.")
        before = await last_seq(conn)
        # Claiming another project, or the admin role, with p1's credentials: NATS refuses the
        # subject, and the client says so at once (no waiting out a timeout).
        for actor in (Actor(project="p2", role="member"), Actor(role="admin")):
            with pytest.raises(Forbidden) as err:
                await mine.request(
                    "fixed_ip.allocate", {"instance": "i-x", "project": "p2"}, actor=actor
                )
            assert "refused these credentials" in err.value.message
        # The generic client may act for any project (a trusted integration).
        anyone = await Client.connect(
            secured.url, Actor(project="p2", role="member"), **secured.creds["client"]
        )
        try:
            b = await anyone.allocate_fixed_ip("i-b", project="p2", host="h1")
            assert b["network_id"] != a["network_id"]
        finally:
            await anyone.close()
        after_b = await last_seq(conn)
        assert after_b > before
    finally:
        await mine.close()

    # A hand-made request on p1's own subject whose actor says p2: the service refuses it.
    raw = await Raw().open(secured.url, creds)
    try:
        payload = msgpack.packb(
            {
                "command_id": "forged-1",
                "actor": {"project": "p2", "role": "member", "user": "x"},
                "args": {"instance": "i-y", "project": "p2"},
            }
        )
        reply = await raw.nc.request(
            "netledger.project.p1.cmd.fixed_ip.allocate", payload, timeout=10
        )
        answer = msgpack.unpackb(reply.data)
        assert answer["error"]["code"] == "forbidden", answer
        # Nor the plain command subject (where the actor is taken on trust).
        await raw.nc.publish("netledger.cmd.fixed_ip.allocate", payload)
        assert await raw.violation("netledger.cmd.fixed_ip.allocate")
    finally:
        await raw.close()
    assert await last_seq(conn) == after_b


def test_project_credentials_file_makes_the_cli_act_for_that_project(
    secured: Secured, tmp_path: Path
) -> None:
    """Sourcing ``client-p1.env`` (or a systemd EnvironmentFile) is all the CLI needs."""
    p = subprocess.Popen(
        [NETLEDGER, "--nats", secured.url, "serve", "--no-projector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env_from(secured.files["service"]),
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().startswith("netledger ready")
        admin = _env_from(secured.files["admin"])
        made = subprocess.run(
            [
                *(NETLEDGER, "--nats", secured.url, "--json", "network", "create"),
                *(
                    "--label",
                    "v",
                    "--cidr",
                    "10.22.0.0/16",
                    "--num-networks",
                    "2",
                    "--mode",
                    "vlan",
                ),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=admin,
        )
        assert made.returncode == 0, made.stderr
        env = _env_from(secured.files["client-p1"])
        assert (env["NETLEDGER_ROLE"], env["NETLEDGER_PROJECT"]) == ("member", "p1")
        argv = [NETLEDGER, "--nats", secured.url, "--json", "fixed-ip", "allocate"]
        ok = subprocess.run(
            [*argv, "--instance", "i-1", "--project", "p1", "--host", "h1"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert json.loads(ok.stdout)["address"].startswith("10.22.")
        other = subprocess.run(
            [
                *(NETLEDGER, "--nats", secured.url, "--json", "--as-project", "p2", "fixed-ip"),
                *("allocate", "--instance", "i-2", "--project", "p2", "--host", "h1"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert other.returncode == 1
        assert json.loads(other.stdout)["error"]["code"] == "forbidden"
    finally:
        p.terminate()
        p.wait(15)


async def test_nobody_reads_another_users_replies(secured: Secured, svc: Any) -> None:
    """Each user receives replies below its own inbox prefix and may subscribe nowhere else:
    p2's credentials cannot watch p1's answers (its addresses) go by."""
    assert secured.creds["client-p1"]["inbox_prefix"] == "_INBOX_client-p1"
    spy = await Raw().open(secured.url, secured.creds["client-p2"])
    try:
        for subject in ("_INBOX.>", "_INBOX_client-p1.>", ">"):
            await spy.nc.subscribe(subject)
            assert await spy.violation(f'subscription to "{subject}"'), subject
        await spy.nc.subscribe("_INBOX_client-p2.>")
        await spy.nc.flush()
        assert not await spy.violation('subscription to "_inbox_client-p2.>"', timeout=0.5)
    finally:
        await spy.close()
    # Every role works through its own prefix (the service, readers and clients above did).
    mine = await Client.connect(
        secured.url, Actor(project="p1", role="member"), **secured.creds["client-p1"]
    )
    try:
        assert (await mine.request("network.list", {}))["networks"] is not None
    finally:
        await mine.close()


async def test_a_hosts_lease_script_records_only_what_that_host_serves(
    secured: Secured, svc: Any
) -> None:
    """dnsmasq's lease script runs ``netledger dhcp-event`` with its executor's credentials:
    NATS lets them send only on their host's subject, where the service takes only leases and
    releases of addresses whose DHCP that host serves."""
    conn, service = svc
    admin = await Client.connect(secured.url, **secured.creds["admin"])
    try:
        [net] = await admin.create_networks(
            label="d", cidr="10.23.0.0/24", mode="flat_dhcp", network_host="h1"
        )
        ip = await admin.allocate_fixed_ip("i-1", network_id=net["id"], host="h2")
    finally:
        await admin.close()

    async def script(executor: str, as_host: str, *args: str) -> subprocess.CompletedProcess[str]:
        # In a thread: the service answering it runs in this event loop.
        env = {**_env_from(secured.files[executor]), "NETLEDGER_AS_HOST": as_host}
        return await asyncio.to_thread(
            subprocess.run,
            [NETLEDGER, "--nats", secured.url, "--json", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    before = await last_seq(conn)
    lease = ("dhcp-event", "add", ip["mac"], ip["address"])
    # h2 runs the instance but h1 is the network's host: only h1's dnsmasq serves it.
    for executor, as_host in (("executor-h2", "h2"), ("executor-h2", "h1")):
        p = await script(executor, as_host, *lease)
        assert p.returncode == 1, p.stdout + p.stderr
        error = json.loads(p.stdout)["error"]
        assert error["code"] == "forbidden", (executor, as_host)
    # Another host's subject: NATS refuses it, and the error says whose credentials it needs.
    assert "acting as host h1's DHCP lease script" in error["message"], error
    # Nothing but leases and releases on a host's subject.
    p = await script(
        "executor-h1", "h1", "fixed-ip", "allocate", "--instance", "i-9", "--network", net["id"]
    )
    assert json.loads(p.stdout)["error"]["code"] == "forbidden"
    assert await last_seq(conn) == before
    p = await script("executor-h1", "h1", *lease)
    assert p.returncode == 0, p.stdout + p.stderr
    await service.follower.wait_for(before + 1)
    [(_, _, ev)] = [e for e in await read_all(conn) if e[0] > before]
    assert (type(ev.event).__name__, ev.event.address) == ("FixedIpLeased", ip["address"])


async def test_liveness_and_snapshots_under_auth(secured: Secured, svc: Any) -> None:
    """The service creates the liveness and snapshot buckets and writes a snapshot; an
    executor writes only its own liveness keys; the auditor reads both and verifies."""
    from netledger.journal.liveness import live_bucket
    from netledger.journal.liveness import read_all as read_live
    from netledger.service.snapshotter import SnapshotPolicy

    conn, service = svc
    await _network(conn, secured)
    assert service.heartbeats is not None, "the service watches heartbeats under auth"
    writer = CommandService(conn, snapshots=SnapshotPolicy(every_events=1))
    await writer.start()
    try:
        assert writer.snapshotter is not None
        stored = await writer.snapshotter.write()
        assert stored is not None and stored.seq == await last_seq(conn)
    finally:
        await writer.close()
    ex = await connect(secured.url, name="executor", **secured.creds["executor-h1"])
    try:
        kv = await live_bucket(ex)
        assert kv is not None
        await kv.put("host.h1.status", b'{"host": "h1"}')
    finally:
        await ex.close()
    raw = await Raw().open(secured.url, secured.creds["executor-h1"])
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await raw.nc.jetstream(timeout=0.5).publish("$KV.NETLEDGER_LIVE.host.h2.seen", b"{}")
        assert await raw.violation("$KV.NETLEDGER_LIVE.host.h2.seen")
    finally:
        await raw.close()
    aud = await connect(secured.url, name="auditor", **secured.creds["auditor"])
    try:
        assert set(await read_live(aud)) == {"host.h1.status"}
    finally:
        await aud.close()
    env = {**os.environ, "NETLEDGER_USER": "auditor"}
    env["NETLEDGER_PASSWORD"] = secured.creds["auditor"]["password"]
    env["NETLEDGER_INBOX"] = secured.creds["auditor"]["inbox_prefix"]
    p = await asyncio.to_thread(
        subprocess.run,
        [NETLEDGER, "--nats", secured.url, "verify", "--snapshots", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["equal"]


def test_auth_init_into_a_folder_it_cannot_create_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "auth"
    r = subprocess.run(
        [NETLEDGER, "auth", "init", "--out", str(out), "--hosts", "h1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"error [credentials_error]: cannot write the auth setup into {out}")


def test_auth_init_force_leaves_every_file_0600_and_follows_no_link(tmp_path: Path) -> None:
    """--force rewrote the files in place: one copied or chmod-ed 0644 kept that mode with the
    new passwords, and a symlink in the folder had the secrets written wherever it pointed
    (found by review). Now each file is a new one, 0600, renamed into place."""
    import os
    import stat

    out = tmp_path / "auth"

    def init(*extra: str) -> None:
        r = subprocess.run([NETLEDGER, "auth", "init", "--out", str(out), "--hosts", "h1", *extra],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr

    init()
    for f in out.iterdir():
        f.chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    (out / "admin.env").unlink()
    (out / "admin.env").symlink_to(elsewhere)
    init("--force")
    files = sorted(out.iterdir())
    assert files and all(stat.S_IMODE(f.lstat().st_mode) == 0o600 for f in files), [
        (f.name, oct(f.lstat().st_mode)) for f in files]  # fmt: skip
    assert not (out / "admin.env").is_symlink() and elsewhere.read_text() == ""
    assert "NETLEDGER_PASSWORD=" in (out / "admin.env").read_text()
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


async def test_an_executor_reads_subjects_one_by_one_without_waiting_on_refused_deletions(
    secured: Secured, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A share is read one subject at a time, each with a one-off consumer deleted once read.
    An executor may not delete consumers: each deletion waited out its 10 s timeout, inside
    the read (a view's start took a minute under per-role auth: found by review). Now the
    deletion is not awaited, and once refused it is not asked again (before: once per
    consumer, 9 refusals, 90 s)."""
    from netledger.journal.follow import read_subjects

    caplog.set_level(logging.INFO, logger="netledger.stream")
    conn, _service = svc
    net = await _network(conn, secured)
    subjects = {f"netledger.evt.network.{net['id']}": 1}
    subjects["netledger.evt.registry"] = 1
    subjects["netledger.evt.host.h1"] = 1
    ex = await connect(secured.url, name="executor", **secured.creds["executor-h1"])
    try:
        end = await last_seq(conn)
        got = []
        for _ in range(3):  # three reads of three subjects each: 9 consumers
            got = await read_subjects(ex, subjects, end)
        assert {s for _, s, _, _ in got} >= {"netledger.evt.registry"}
        for _k in range(50):  # (the refusal arrives asynchronously)
            if ex.refused:
                break
            await asyncio.sleep(0.1)
        refused = [s for s in ex.refused if s.startswith("$js.api.consumer.delete.")]
        assert len(refused) == 1, refused  # asked once, never again
        # Expected of a reader: no warning (every executor start under auth printed one).
        said = [r for r in caplog.records if "consumer deletion" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.INFO]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        await ex.close()


def test_every_credentials_file_names_the_inbox_its_user_may_read(tmp_path: Path) -> None:
    """Admin's too: without NETLEDGER_INBOX a request that got no answer (`status` during an
    election) was blamed on a missing inbox prefix, which admin's file never had."""
    from netledger.ops.auth import make_setup, write_setup

    setup = make_setup(["h1"], projects=["p1"])
    write_setup(tmp_path, setup)
    for u in setup.users:
        creds = read_credentials(str(tmp_path / f"{u.name}.env"))
        prefix = creds["inbox_prefix"]
        assert prefix == f"_INBOX_{u.name}"
        allowed = u.permissions.subscribe_allow
        assert f"{prefix}.>" in allowed or ">" in allowed, (u.name, allowed)


async def test_a_reader_command_with_credentials_that_may_not_read_is_forbidden(
    secured: Secured, svc: Any
) -> None:
    """`status` (any reader) with a client's credentials: the server refuses the JetStream API
    subject and says so on the connection. The request waited out its 10 s timeout and the CLI
    said `unavailable`, "did not answer a request in time" (found walking docs/security.md):
    now `forbidden`, naming the subject."""

    def status_as(user: str) -> subprocess.CompletedProcess[str]:
        env = {**_env_from(secured.files[user]), "NATS_URL": secured.url}
        return subprocess.run(
            [NETLEDGER, "--json", "status"], capture_output=True, text=True, timeout=60, env=env
        )

    p = await asyncio.to_thread(status_as, "client-p1")
    assert p.returncode == 1, p.stdout + p.stderr
    error = json.loads(p.stdout)["error"]
    assert error["code"] == "forbidden", error
    assert error["details"]["subject"] == "$JS.API.STREAM.INFO.NETLEDGER", error
    # A user that may read gets its answer on the same server.
    p = await asyncio.to_thread(status_as, "auditor")
    assert json.loads(p.stdout)["stream"]["name"] == "NETLEDGER", p.stdout + p.stderr
