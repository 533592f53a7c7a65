"""Review hrev12: per-role credentials (``netledger auth init``) on a real nats-server — what
a role needs in a real flow, and what it must not be able to do.

Uses the ``secured`` server and the ``svc`` command service of tests/ops/test_auth.py.
"""

from __future__ import annotations

import json
from typing import Any

import nats
import pytest

from netledger.journal.liveness import live_bucket
from netledger.journal.liveness import read_all as read_live
from netledger.journal.stream import connect, last_seq
from netledger.ops.status import SERVICE_NAME, SRV_PREFIX, StatusResponder, gather
from tests.ops.test_auth import Raw, Secured, secured, svc  # noqa: F401  (fixtures)


async def test_status_finds_the_command_service_under_auth(
    secured: Secured,  # noqa: F811
    svc: Any,  # noqa: F811
) -> None:
    """``netledger status`` (an auditor's or admin's credentials: docs/security.md) finds the
    command service by NATS service discovery (``$SRV.STATS.netledger``). Under auth the
    service could not subscribe to ``$SRV.…`` nor the auditor publish there: every status
    said "no command-service replica answered" and exited 1, whatever the health."""
    conn, service = svc
    responder = StatusResponder.for_service(conn, service)
    await responder.start()
    try:
        for role in ("auditor", "admin"):
            raw = await Raw().open(secured.url, secured.creds[role])
            try:
                reply = await raw.nc.request(f"{SRV_PREFIX}.STATS.{SERVICE_NAME}", b"", timeout=10)
                answer = json.loads(reply.data)
                assert answer["id"] == responder.id, (role, answer)
            finally:
                await raw.close()
        aud = await connect(secured.url, name="auditor", **secured.creds["auditor"])
        try:
            status = await gather(aud, wait=2.0)
        finally:
            await aud.close()
        assert "no command-service replica answered" not in status["problems"], status
        assert [s["id"] for s in status["services"]] == [responder.id]
    finally:
        await responder.close()


async def test_a_status_request_never_has_the_service_write_where_it_asks(
    secured: Secured,  # noqa: F811
    svc: Any,  # noqa: F811
) -> None:
    """A discovery request's reply subject is its sender's choice, and the service answers
    with its own rights: it must not answer on the log's subjects (an auditor would append
    a JSON blob to the registry) nor the server's ($KV: another host's liveness key)."""
    conn, service = svc
    responder = StatusResponder.for_service(conn, service)
    await responder.start()
    raw = await Raw().open(secured.url, secured.creds["auditor"])
    try:
        before = await last_seq(conn)
        for reply in ("netledger.evt.registry", "$KV.NETLEDGER_LIVE.host.h2.seen"):
            await raw.nc.publish(f"{SRV_PREFIX}.STATS.{SERVICE_NAME}", b"", reply=reply)
        # A request it does answer, after those: by then they were handled.
        ok = await raw.nc.request(f"{SRV_PREFIX}.PING.{SERVICE_NAME}", b"", timeout=10)
        assert json.loads(ok.data)["id"] == responder.id
        await conn.nc.flush()
        assert await last_seq(conn) == before
        assert "host.h2.seen" not in await read_live(conn)
    finally:
        await raw.close()
        await responder.close()


async def test_an_executor_cannot_erase_another_hosts_liveness(
    secured: Secured,  # noqa: F811
    svc: Any,  # noqa: F811
) -> None:
    """An executor may write only its own keys of the liveness bucket (docs/security.md).
    A KV bucket's stream takes ``Nats-Rollup`` headers (nats-py creates it so), and a
    message on its own key with ``Nats-Rollup: all`` purges the whole stream: host h1 wiped
    host h2's heartbeat (what reclaiming decides on) and status. Fixed: the service turns the
    bucket stream's rollups off (journal/liveness.py ``live_bucket``)."""
    for host in ("h1", "h2"):
        ex = await connect(secured.url, name=host, **secured.creds[f"executor-{host}"])
        try:
            kv = await live_bucket(ex)
            assert kv is not None, "the service created the bucket"
            await kv.put(f"host.{host}.status", json.dumps({"host": host}).encode())
        finally:
            await ex.close()
    raw = await Raw().open(secured.url, secured.creds["executor-h1"])
    try:
        js = raw.nc.jetstream(timeout=5)
        try:
            await js.publish(
                "$KV.NETLEDGER_LIVE.host.h1.status", b"{}", headers={"Nats-Rollup": "all"}
            )
        except nats.errors.Error:
            pass  # refused: what is wanted
    finally:
        await raw.close()
    aud = await connect(secured.url, name="auditor", **secured.creds["auditor"])
    try:
        assert "host.h2.status" in await read_live(aud)
    finally:
        await aud.close()


async def test_an_executor_may_still_write_and_delete_its_own_keys(
    secured: Secured,  # noqa: F811
    svc: Any,  # noqa: F811
) -> None:
    """What an executor does with its keys (put, delete) keeps working whatever is done
    against rollups."""
    ex = await connect(secured.url, name="h1", **secured.creds["executor-h1"])
    try:
        kv = await live_bucket(ex)
        assert kv is not None
        await kv.put("host.h1.status", b'{"host": "h1"}')
        await kv.put("host.h1.seen", b'{"host": "h1"}')
        await kv.delete("host.h1.status")
        assert set(await read_live(ex)) == {"host.h1.seen"}
    finally:
        await ex.close()


def _config_cli(*args: str, env: dict[str, str] | None = None) -> str:
    import os
    import subprocess

    from tests.fault_helpers import NETLEDGER

    base = {k: v for k, v in os.environ.items() if not k.startswith(("NETLEDGER_", "NATS_"))}
    p = subprocess.run(
        [NETLEDGER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )
    assert p.returncode == 0, p.stderr
    return p.stdout + p.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--json", "config", "show"),
        ("config", "show"),
        ("config", "check"),
        ("--json", "config", "check"),
    ],
)
def test_config_show_and_check_never_print_the_password(tmp_path: Any, args: Any) -> None:
    """``config show`` masks the NATS password (``***``), yet printed it in clear beside the
    mask (``"file": {"password": ...}``), and ``config check`` printed the file whole."""
    conf = tmp_path / "netledger.toml"
    conf.write_text('user = "service"\npassword = "s3cret-from-file"\n')
    if args[-1] == "check":
        args = (*args, str(conf))
    out = _config_cli("--config", str(conf), *args)
    assert "s3cret-from-file" not in out, out
    assert "service" in out


def test_config_show_never_prints_a_password_in_the_nats_url() -> None:
    """nats-py takes ``nats://user:password@host``; ``config show`` printed it whole."""
    out = _config_cli("config", "show", env={"NATS_URL": "nats://svc:s3cret-in-url@127.0.0.1:4222"})
    assert "s3cret-in-url" not in out, out
    assert "127.0.0.1:4222" in out


def test_serve_never_prints_the_password_of_its_nats_url(secured: Secured) -> None:  # noqa: F811
    """``serve``'s ready line goes to stdout (journald under systemd): a password given in the
    NATS URL (nats-py takes credentials so) is masked there (found by review)."""
    import os
    import subprocess

    from tests.ops.test_auth import NETLEDGER

    creds = secured.creds["service"]
    user, password = creds["user"], creds["password"]
    url = secured.url.replace("nats://", f"nats://{user}:{password}@", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLEDGER_")}
    with open(secured.files["service"]) as f:  # its inbox prefix (what its user may read)
        for line in f.read().splitlines():
            if line.startswith("NETLEDGER_INBOX="):
                env["NETLEDGER_INBOX"] = line.split("=", 1)[1]
    p = subprocess.Popen(
        [NETLEDGER, "--nats", url, "serve", "--no-projector"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            p.terminate()
            raise AssertionError(p.communicate(timeout=30)[1][-2000:])
        assert line.startswith("netledger ready"), line
        assert password not in line and f"{user}:***@" in line, line
    finally:
        p.terminate()
        p.wait(30)


def test_serve_without_its_inbox_prefix_says_so(secured: Secured) -> None:  # noqa: F811
    """Per-role credentials without the inbox prefix their user may read: every request's reply
    is denied, so JetStream's API never answers. ``serve`` said so with nats-py's traceback
    ("nats: timeout"); now with the ``unavailable`` code and what to check."""
    import json as _json
    import os
    import subprocess

    from tests.ops.test_auth import NETLEDGER

    creds = secured.creds["service"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLEDGER_")}
    p = subprocess.run(
        [NETLEDGER, "--json", "--nats", secured.url, "--user", creds["user"], "--password",
         creds["password"], "serve", "--no-projector"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    err = _json.loads(p.stdout)["error"]
    assert err["code"] == "unavailable"
    assert "inbox prefix" in err["message"] and creds["password"] not in p.stdout + p.stderr
