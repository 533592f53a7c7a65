"""The systemd units in deploy/: valid for systemd, and running commands that exist."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from netledger.cli import cli

DEPLOY = Path(__file__).parent.parent.parent / "deploy"
UNITS = ["netledger.service", "netledger-projector.service", "netledger-executor@.service"]


def exec_start(unit: str) -> list[str]:
    for line in (DEPLOY / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{unit} has no ExecStart")


@pytest.mark.parametrize("unit", UNITS)
def test_unit_runs_an_existing_command(unit: str) -> None:
    argv = exec_start(unit)
    assert argv[0] == "/usr/bin/netledger"
    cmd = cli
    # The command's words come first; what follows the first option is options and values.
    words = [a for a in argv[1:] if a != "%i"]
    words = words[: next((i for i, a in enumerate(words) if a.startswith("-")), len(words))]
    for w in words:
        sub = cmd.get_command(click.Context(cmd), w) if isinstance(cmd, click.Group) else None
        assert sub is not None, f"{unit}: no command {w!r}"
        cmd = sub
    assert not isinstance(cmd, click.Group), f"{unit}: {' '.join(words)} is no command"
    opts = {o for p in cmd.params for o in p.opts}
    assert {a for a in argv[1:] if a.startswith("--")} <= opts


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package (.ci/run does)")
    # The units name /usr/bin/netledger, where a package installs it; verify against this venv's.
    text = (DEPLOY / unit).read_text()
    text = text.replace("/usr/bin/netledger", str(Path(sys.executable).with_name("netledger")))
    name = unit.replace("@.", "@compute1.")
    (tmp_path / name).write_text(text)
    p = subprocess.run(
        [analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (p.stdout + p.stderr).splitlines()
        # verify also lints units of the host it runs on: only ours matter
        if name in line
    ]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


#: the user whose credentials each unit runs with (`auth init`'s names; %i: the host)
UNIT_USERS = {
    "netledger.service": "service",
    "netledger-projector.service": "projector",
    "netledger-executor@.service": "executor-%i",
}


@pytest.mark.parametrize("unit", UNITS)
def test_unit_reads_the_credentials_auth_init_writes_for_it(unit: str, tmp_path: Path) -> None:
    """With per-role NATS users each unit needs its own user's file: deploy.md once said to name
    them with `creds =` (a JWT option), and every unit read the one /etc/default/netledger."""
    from netledger.ops.auth import make_setup, write_setup

    write_setup(tmp_path, make_setup(["compute1"]))
    written = {p.name for p in tmp_path.iterdir()}
    files = [
        line.removeprefix("EnvironmentFile=")
        for line in (DEPLOY / unit).read_text().splitlines()
        if line.startswith("EnvironmentFile=")
    ]
    own = f"-/etc/netledger/{UNIT_USERS[unit]}.env"
    assert own in files, files
    # read last: its variables win over the shared file's
    assert files[-1] == own
    assert Path(own.lstrip("-").replace("%i", "compute1")).name in written
