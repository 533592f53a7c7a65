"""The lease script's mark is written before its report and made after it
(executor/leasemarks.py ``SENDING``): the executor removing the address's marks while the
report runs leaves no mark, and a report that fails, or a script killed in it, leaves none
either — the next ``old`` reports the lease again.

The real ``/bin/sh`` runs the wrapper (:func:`script_text`) with dnsmasq's arguments and
environment; its command is a stand-in that records its arguments, runs what the test puts in
the middle of the report (the executor's real :func:`leasemarks.unmark`, a kill of the script)
and exits as told. The same race with the real dnsmasq, executor and service is in
test_lease_mark_race_netns.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from netledger.executor import hostsdir, leasemarks
from netledger.executor.dhcp import script_text

M = "02:16:3e:00:00:0a"
A = "10.0.0.2"


class Script:
    """The wrapper, its command running ``during`` (shell) between recording and exiting."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.marks = tmp / "reported"
        self.marks.mkdir()
        self.calls = tmp / "calls"
        self.path = tmp / "dhcp-script"
        self.path.write_text(script_text([str(tmp / "cmd")], {}, None, str(self.marks)))
        self.path.chmod(0o700)

    def __call__(self, *args: str, during: str = "", rc: int = 0) -> int:
        cmd = self.tmp / "cmd"
        cmd.write_text(f'#!/bin/sh\necho "$*" >> {self.calls}\n{during}\nexit {rc}\n')
        cmd.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DNSMASQ_")}
        env["DNSMASQ_LEASE_EXPIRES"] = "1000"
        return subprocess.run([str(self.path), *args], env=env, check=False).returncode

    def ran(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def mark(self) -> str | None:
        p = self.marks / A
        return p.read_text() if p.exists() else None

    def sending(self) -> list[str]:
        return [n for n in os.listdir(self.marks) if leasemarks.SENDING in n]


def unmark_during(marks: Path, address: str) -> str:
    """Shell running the executor's unmark of ``address`` (its entry taken out)."""
    code = f"from netledger.executor import leasemarks; leasemarks.unmark({str(marks)!r}, [{address!r}])"
    return shlex.join([sys.executable, "-c", code])


def test_a_mark_is_being_written_while_the_report_runs(tmp_path: Path) -> None:
    script = Script(tmp_path)
    seen = tmp_path / "seen"
    # what the marks' directory holds while the report runs: the mark to be, no mark
    during = f"ls {shlex.quote(str(script.marks))} > {seen}"
    assert script("add", M, A, "vm-a", during=during) == 0
    [name] = seen.read_text().split()
    assert name.startswith(A + leasemarks.SENDING)
    assert script.mark() == f"{M} 1000\n" and script.sending() == []


def test_the_executor_unmarking_during_the_report_leaves_no_mark(tmp_path: Path) -> None:
    """The address's entry taken out while its lease is reported (freed and given again to
    the same MAC under another name): no mark, so the SIGHUP's ``old`` reports it again."""
    script = Script(tmp_path)
    assert script("add", M, A, "vm-a", during=unmark_during(script.marks, A)) == 0
    assert script.mark() is None and script.sending() == []
    assert script("old", M, A, "vm-again") == 0  # the SIGHUP's: reported
    assert script.ran() == 2 and script.mark() == f"{M} 1000\n"
    assert script("old", M, A, "vm-again") == 0  # and only once
    assert script.ran() == 2


def test_a_mark_already_there_goes_too(tmp_path: Path) -> None:
    """A renewal reported while the entry is taken out: its earlier mark is removed with the
    one being written."""
    script = Script(tmp_path)
    (script.marks / A).write_text(f"{M} 900\n")
    assert script("old", M, A, during=unmark_during(script.marks, A)) == 0
    assert script.mark() is None and script.sending() == []


def test_unmarking_another_address_keeps_the_mark(tmp_path: Path) -> None:
    script = Script(tmp_path)
    assert script("add", M, A, during=unmark_during(script.marks, "10.0.0.3")) == 0
    assert script.mark() == f"{M} 1000\n"


def test_a_failed_report_leaves_no_mark_and_is_retried(tmp_path: Path) -> None:
    script = Script(tmp_path)
    assert script("add", M, A, rc=3) == 3  # its status, for dnsmasq's log
    assert script.mark() is None and script.sending() == []
    assert script("old", M, A) == 0
    assert script.ran() == 2 and script.mark() == f"{M} 1000\n"


def test_a_script_killed_in_its_report_leaves_no_mark(tmp_path: Path) -> None:
    """Killed after the report was sent (dnsmasq stopped, the machine going down): whether
    the log has it is not known, so no mark — the next ``old`` reports it. What it was
    writing stays until the address is unmarked."""
    script = Script(tmp_path)
    assert script("add", M, A, during="kill -9 $PPID") == -9
    assert script.mark() is None and len(script.sending()) == 1
    assert script("old", M, A) == 0
    assert script.ran() == 2 and script.mark() == f"{M} 1000\n"
    d = tmp_path / "br.hostsdir"
    hostsdir.sync(str(d), [f"{M},vm-a,{A}"], fresh=True, marks=str(script.marks))
    hostsdir.sync(str(d), [], marks=str(script.marks))  # the entry taken out
    assert os.listdir(script.marks) == []


def test_unmark_takes_what_is_being_written_in_any_spelling(tmp_path: Path) -> None:
    for n in (
        "fd00::2.sending.41",
        "fd00::2",
        "fd00::2.client",
        "10.0.0.3.sending.7",
        "x.sending.1",
    ):
        (tmp_path / n).write_text("x 1\n")
    leasemarks.unmark(str(tmp_path), ["fd00:0:0:0::2"])
    assert sorted(os.listdir(tmp_path)) == ["10.0.0.3.sending.7", "fd00::2.client", "x.sending.1"]
