"""dnsmasq's environment (executor/dhcpplan.py ``dnsmasq_env``) is a constant, and the lease
script carries all it needs itself (``script_text``, executor/cli.py ``_lease_command``): its
PATH, ``netledger``'s absolute path, the CA of a ``tls://`` server. With the real dnsmasq:
test_dhcp_env_netns.py, test_dhcp_env_two_runs_netns.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netledger.common.output import Output
from netledger.common.settings import Settings
from netledger.events.codec import Actor
from netledger.executor.cli import _lease_command
from netledger.executor.dhcpplan import KEPT_ENV, SYSTEM_PATH, dnsmasq_env, script_text


def test_dnsmasq_env_is_a_constant_path() -> None:
    """Nothing of the executor's: two executors of one host whose environments differ (PATH,
    NETLEDGER_CONFIG) start dnsmasq alike, and so adopt each other's."""
    assert dnsmasq_env() == {"PATH": SYSTEM_PATH}
    assert dnsmasq_env() is not dnsmasq_env()  # (a fresh dict: a caller may change its own)
    assert KEPT_ENV == ("PATH",)


def test_the_script_runs_with_no_environment_at_all(tmp_path: Path) -> None:
    """Run by ``sh`` with an empty environment, the script gives its command its own PATH and
    what it was written with (the command stands in for ``netledger``: it prints them)."""
    show = 'printf "%s|%s|%s|%s\\n" "$PATH" "$SSL_CERT_FILE" "$NETLEDGER_AS_HOST" "$*"'
    env = {"SSL_CERT_FILE": "/etc/netledger/ca dir/ca.pem", "NETLEDGER_AS_HOST": "h1"}
    script = tmp_path / "dhcp-script"
    script.write_text(script_text(["/bin/sh", "-c", show, "sh"], env))
    p = subprocess.run(
        ["/bin/sh", str(script), "add", "02:00:00:00:00:01", "10.0.0.2"],
        env={},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert p.stdout == (
        f"{SYSTEM_PATH}|/etc/netledger/ca dir/ca.pem|h1|dhcp-event add 02:00:00:00:00:01 10.0.0.2\n"
    )


def test_the_lease_command_carries_what_the_environment_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``netledger`` by an absolute path; the executor's CA variables, made absolute (dnsmasq
    runs the script from /); nothing else of its environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", "ca.pem")  # relative to the executor's directory
    monkeypatch.setenv("SSL_CERT_DIR", "/etc/ssl/certs")
    monkeypatch.setenv("PATH", f".:{os.environ['PATH']}")  # a relative entry
    monkeypatch.setenv("NETLEDGER_CONFIG", "/etc/netledger/from-env.toml")
    settings = Settings("nats://n:4222", Output(), None, None, None, Actor())
    command, env = _lease_command(settings, "h1", "/etc/netledger/netledger.toml")
    assert os.path.isabs(command[0]) and os.path.exists(command[0])
    assert command[0] in (
        str(Path(sys.executable).with_name("netledger")),
        os.path.abspath(sys.executable),
    )
    assert command[1:] == ["--config", "/etc/netledger/netledger.toml", "--nats", settings.url]
    assert env == {
        "NETLEDGER_AS_HOST": "h1",
        "SSL_CERT_FILE": str(tmp_path / "ca.pem"),
        "SSL_CERT_DIR": "/etc/ssl/certs",
    }
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", "")  # empty: not set
    assert _lease_command(settings, "h1")[1] == {"NETLEDGER_AS_HOST": "h1"}
