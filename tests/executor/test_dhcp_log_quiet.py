"""Review hrev83, the pure parts: what dnsmasq writes to its log (``DIR/BR.log``) and which
dnsmasq the executor runs.

- dnsmasq logs no line per packet (``--quiet-dhcp``, ``--quiet-dhcp6``, ``--quiet-ra``);
- the lease script (run by the real ``/bin/sh`` with dnsmasq's arguments and environment, its
  command a stand-in printing an answer on stdout and a word on stderr) throws away the answer
  of a renewal of a lease already reported — dnsmasq wrote it to the log at each renewal — and
  of nothing else: its stderr and exit status, and every other run's answer, still reach the
  log;
- ``_dnsmasq`` finds dnsmasq on the system PATH whatever the executor's (its first word is
  compared for adoption), and a dnsmasq named by another path to the same file is the same
  program (``Dnsmasq._same_program``).

The real dnsmasq, renewals and rotation: test_soak_review83_dnsmasq_log.py,
test_dhcp_log_cap_netns.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netledger.executor import cli, dhcpplan
from netledger.executor.dhcp import DhcpPaths, Dnsmasq, dnsmasq_argv, script_text
from netledger.executor.model import DhcpSpec, DhcpSubnet

M = "02:16:3e:00:00:0a"
OTHER = "02:16:3e:00:00:0b"
DUID = "00:03:00:01:02:16:3e:00:00:0a"


def test_dnsmasq_logs_no_line_per_packet_but_still_to_its_file() -> None:
    sub = DhcpSubnet("1", "10.0.0.1", "255.255.255.0", "10.0.0.2", 256)
    argv = dnsmasq_argv(DhcpSpec("br1", "1", (sub,), ()), DhcpPaths("/run/t"))
    assert {"--quiet-dhcp", "--quiet-dhcp6", "--quiet-ra"} <= set(argv)
    assert "--log-dhcp" not in argv  # (it would override --quiet-dhcp)
    assert argv[-1] == "--log-facility=/run/t/br1.log"


class Script:
    """The lease script around a stand-in ``netledger``: it records each run, prints an answer
    (stdout) and a word on stderr, and exits as told. What dnsmasq would log is what the
    script printed."""

    def __init__(self, tmp: Path) -> None:
        self.marks = tmp / "reported"
        self.marks.mkdir()
        self.calls = tmp / "calls"
        cmd = tmp / "cmd"
        cmd.write_text(
            "#!/bin/sh\n"
            f'echo "$*" >> {self.calls}\n'
            'echo "answer $4"\n'
            'echo "said $4" >&2\n'
            'exit "${RC:-0}"\n'
        )
        cmd.chmod(0o755)
        self.path = tmp / "dhcp-script"
        self.path.write_text(script_text([str(cmd)], {"K": "v"}, None, str(self.marks)))
        self.path.chmod(0o700)

    def __call__(
        self, action: str, client: str, address: str, expires: str = "1000", rc: int = 0
    ) -> subprocess.CompletedProcess[str]:
        env = {"PATH": dhcpplan.SYSTEM_PATH, "DNSMASQ_LEASE_EXPIRES": expires, "RC": str(rc)}
        return subprocess.run(
            [str(self.path), action, client, address],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    def runs(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def mark(self, address: str) -> str | None:
        p = self.marks / address
        return p.read_text() if p.exists() else None


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return Script(tmp_path)


def test_a_renewals_answer_is_not_logged_its_report_is_made(script: Script) -> None:
    added = script("add", M, "10.0.0.2")
    assert (added.returncode, added.stdout, added.stderr) == (
        0,
        "answer 10.0.0.2\n",
        "said 10.0.0.2\n",
    )
    renewed = script("old", M, "10.0.0.2", expires="1500")  # the same client, a new expiry
    assert script.runs() == 2  # reported (the safety net), the mark follows
    assert script.mark("10.0.0.2") == f"{M} 1500\n"
    assert (renewed.returncode, renewed.stdout, renewed.stderr) == (0, "", "said 10.0.0.2\n")
    again = script("old", M, "10.0.0.2", expires="1500")  # a SIGHUP: nothing runs
    assert (script.runs(), again.stdout, again.stderr) == (2, "", "")


def test_a_renewal_that_fails_says_so(script: Script) -> None:
    script("add", M, "10.0.0.2")
    failed = script("old", M, "10.0.0.2", expires="1500", rc=1)  # NATS away
    assert (failed.returncode, failed.stderr) == (1, "said 10.0.0.2\n")  # both in the log
    assert script.mark("10.0.0.2") == f"{M} 1000\n"
    retried = script("old", M, "10.0.0.2", expires="2000")  # the next renewal: reported
    assert (retried.returncode, retried.stdout) == (0, "")
    assert script.mark("10.0.0.2") == f"{M} 2000\n"


@pytest.mark.parametrize(
    "before",
    [
        [],  # never reported (the service was down, a state dir wiped)
        [("add", OTHER, "10.0.0.2")],  # reported for another client
        [("add", M, "10.0.0.2"), ("del", M, "10.0.0.2")],  # released since
        [("add", M, "10.0.0.3")],  # another address's mark
    ],
)
def test_an_old_not_a_renewal_of_a_reported_lease_is_logged(
    script: Script, before: list[tuple[str, str, str]]
) -> None:
    for args in before:
        assert script(*args).returncode == 0
    old = script("old", M, "10.0.0.2", expires="1500")
    assert (old.returncode, old.stdout) == (0, "answer 10.0.0.2\n")


def test_releases_and_dhcpv6_renewals(script: Script) -> None:
    assert script("add", DUID, "fd00::2").stdout == "answer fd00::2\n"
    assert script("old", DUID, "fd00::2", expires="1500").stdout == ""  # renewed
    assert script.mark("fd00::2") == f"{DUID} 1500\n"
    assert script("del", DUID, "fd00::2", expires="1500").stdout == "answer fd00::2\n"
    assert script.runs() == 3


def test_a_script_without_marks_logs_every_answer(tmp_path: Path) -> None:
    """(No marks, no renewal known: every run as before.)"""
    text = script_text(["/usr/bin/netledger"], {}, None, None)
    assert dhcpplan.RENEWAL_AWARE not in text and "/dev/null" not in text


def _system_dnsmasq() -> str:
    found = shutil.which("dnsmasq", path=dhcpplan.SYSTEM_PATH)
    if found is None:
        raise AssertionError("dnsmasq is missing: apt-get install -y dnsmasq (.ci/run does)")
    return found


def test_dnsmasq_is_found_on_the_system_path_whatever_the_executors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's PATH listing /sbin first, or a folder of its own holding a dnsmasq,
    finds the one every executor of the host finds."""
    want = _system_dnsmasq()
    mine = tmp_path / "bin"
    mine.mkdir()
    (mine / "dnsmasq").write_text("#!/bin/sh\n")
    (mine / "dnsmasq").chmod(0o755)
    for path in (
        f"/sbin:/bin:{dhcpplan.SYSTEM_PATH}",
        f"{mine}:{dhcpplan.SYSTEM_PATH}",
        "/nowhere",
    ):
        monkeypatch.setenv("PATH", path)
        assert cli._dnsmasq() == want, path
    # none on the system PATH: the executor's, then Debian's place
    monkeypatch.setattr(dhcpplan, "SYSTEM_PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(mine))
    assert cli._dnsmasq() == str(mine / "dnsmasq")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cli._dnsmasq() == "/usr/sbin/dnsmasq"


def test_a_dnsmasq_named_by_another_path_to_its_file_is_the_same_program(tmp_path: Path) -> None:
    real = tmp_path / "usr" / "sbin"
    real.mkdir(parents=True)
    (real / "dnsmasq").write_text("#!/bin/sh\n")
    os.symlink(real, tmp_path / "sbin")  # /sbin -> usr/sbin
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(real / "dnsmasq", copy / "dnsmasq")
    d = Dnsmasq(DhcpPaths(str(tmp_path / "state"), dnsmasq=str(real / "dnsmasq")), None, "")
    rest = ("--conf-file=/dev/null", "--pid-file=/run/t/br1.pid")
    ours = (str(real / "dnsmasq"), *rest)
    assert d._same_program((str(tmp_path / "sbin" / "dnsmasq"), *rest)) == ours
    assert d._same_program(ours) == ours
    other = (str(copy / "dnsmasq"), *rest)  # another file: another program, replaced
    assert d._same_program(other) == other
    assert d._same_program(()) == ()
