"""NATS credentials files (``--creds``: a user JWT and its nkey seed) on a nats-server in
operator mode — the decentralized auth of NATS deployments — with JetStream, end to end.

The operator, account and user JWTs are made here with ``nkeys`` (what ``nsc`` would write):
a header, the claims, and the issuer's ed25519 signature, base64url. The server resolves
the accounts from memory (``resolver_preload``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nkeys
import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from tests.fault_helpers import NETLEDGER

_UNLIMITED = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
    "conn": -1, "leaf": -1,
}  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key(prefix: int) -> tuple[bytes, Any, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(seed)
    return seed, kp, kp.public_key.decode()


def _jwt(issuer: Any, sub: str, name: str, nats: dict[str, Any]) -> str:
    iss = issuer.public_key.decode()
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": iss, "name": name, "sub": sub}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest())
    claims["jti"] = claims["jti"].decode().rstrip("=")
    claims["nats"] = nats
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


@pytest.fixture
def operator_mode(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(url, a user's credentials file) of a nats-server in operator mode with JetStream."""
    _, op, op_pub = _key(nkeys.PREFIX_BYTE_OPERATOR)
    _, acc, acc_pub = _key(nkeys.PREFIX_BYTE_ACCOUNT)
    _, _sys, sys_pub = _key(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, _user, user_pub = _key(nkeys.PREFIX_BYTE_USER)
    stored = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    account = {"type": "account", "version": 2, "limits": {**_UNLIMITED, **stored}}
    user = {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1,
            "payload": -1}  # fmt: skip
    extra = (
        f"operator: {_jwt(op, op_pub, 'op', {'type': 'operator', 'version': 2})}\n"
        f"system_account: {sys_pub}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {acc_pub}: {_jwt(op, acc_pub, 'cloud', account)}\n"
        f"  {sys_pub}: {_jwt(op, sys_pub, 'SYS', {**account, 'limits': _UNLIMITED})}\n"
        "}\n"
    )
    creds = tmp_path / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{_jwt(acc, user_pub, 'ops', user)}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    server = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port(), extra_config=extra)
    (tmp_path / "nats").mkdir()
    server.start()
    try:
        yield server.url, creds
    finally:
        server.stop()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NETLEDGER, "--nats", url, *args], capture_output=True, text=True, timeout=60
    )


def test_serve_and_the_cli_with_a_nats_credentials_file(operator_mode: tuple[str, Path]) -> None:
    url, creds = operator_mode
    p = subprocess.Popen(
        [NETLEDGER, "--nats", url, "--creds", str(creds), "serve", "--no-projector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("netledger ready"):
            p.kill()
            raise AssertionError(p.communicate()[1][-3000:])
        r = _cli(url, "--creds", str(creds), "--json", "network", "create", "--label", "a",
                 "--cidr", "10.5.0.0/24")  # fmt: skip
        assert r.returncode == 0, r.stderr
        r = _cli(url, "--creds", str(creds), "--json", "fixed-ip", "allocate", "--instance", "i1",
                 "--network", "1")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["address"] == "10.5.0.3"
        r = _cli(url, "--creds", str(creds), "--json", "export")
        assert r.returncode == 0, r.stderr
        assert [json.loads(line)["event"]["type"] for line in r.stdout.splitlines()][-1] == (
            "FixedIpAllocated"
        )
        # without them the server refuses the connection, and the CLI says so
        r = _cli(url, "network", "list")
        assert r.returncode == 1
        assert r.stderr.startswith("error [unavailable]: cannot connect to NATS at")
        # the server's words, or (when the reset reached the client before them) the hint
        assert "Authorization Violation" in r.stderr or "are credentials" in r.stderr
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_a_credentials_file_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    r = _cli("nats://127.0.0.1:1", "--creds", str(tmp_path / "nope.creds"), "network", "list")
    assert r.returncode == 2
    assert "--creds" in r.stderr and "nope.creds" in r.stderr and "does not exist" in r.stderr
