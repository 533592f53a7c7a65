"""review92: two looks at one bridge's dnsmasq log at once (executor/dhcp.py ``_cap_log``).

The periodic sweep calls ``Dnsmasq.planned`` in a worker thread (executor/sweeping.py,
``asyncio.to_thread``) beside the passes of changes, whose ``reconcile`` calls it too: both may
rotate the same log over ``LOG_CAP`` at once, with no lock between them. When the second look
runs between the first's size check and its renames, the first moves the second's fresh, empty
``BR.log`` over ``BR.log.old``: the log that was rotated (the one kept) is dropped, and the
first then makes another empty log. The interleaving is forced (no timing): the first look's
ownership check (``_ours``) runs the second look to its end before it answers.

A real dnsmasq (no DNS port, no DHCP: just its log file, made and chowned by itself), root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netledger.executor.dhcp import LOG_CAP, Dnsmasq
from netledger.executor.dhcpplan import DhcpPaths

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(DNSMASQ), reason="needs root and dnsmasq"
)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Dnsmasq, int, Path]]:
    os.chmod(tmp_path, 0o755)
    paths = DhcpPaths(str(tmp_path), DNSMASQ)
    log = Path(paths.file("br0", "log"))
    proc = subprocess.Popen(
        [
            DNSMASQ,
            "--keep-in-foreground",
            "--port=0",
            f"--pid-file={paths.file('br0', 'pid')}",
            f"--log-facility={log}",
            "--no-resolv",
            "--no-hosts",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.stat().st_size > 0):
            assert proc.poll() is None and time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.05)
        yield Dnsmasq(paths, None, paths.script), proc.pid, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_looks_at_once_keep_the_rotated_log(
    running: tuple[Dnsmasq, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dnsmasq, pid, log = running
    with log.open("a") as fh:
        fh.writelines(f"filler line {i:06d} of a log that kept growing\n" for i in range(6000))
    kept = log.read_text()
    assert len(kept) > LOG_CAP
    made = log.stat()

    real_ours = Dnsmasq._ours
    nested = []

    def ours_then_the_other_look(self: Dnsmasq, bridge: str, p: int) -> tuple[str, ...]:
        got = real_ours(self, bridge, p)
        if not nested:  # the first look, past its size check: the other look runs now
            nested.append(True)
            self._cap_log(bridge, p)
        return got

    monkeypatch.setattr(Dnsmasq, "_ours", ours_then_the_other_look)
    dnsmasq._cap_log("br0", pid)
    monkeypatch.undo()

    old = Path(str(log) + ".old")
    assert log.exists()
    st = log.stat()
    assert (st.st_uid, st.st_mode) == (made.st_uid, made.st_mode)
    assert old.read_text() == kept, "the rotated log was dropped"


def test_a_log_renamed_away_and_not_made_again_is_made_again(
    running: tuple[Dnsmasq, int, Path],
) -> None:
    """An executor stopped between the rotation's two renames leaves no ``BR.log``: dnsmasq,
    no longer root, cannot make it, and every later look warned and gave up. The next look
    makes it as the kept one was, and tells dnsmasq to reopen it (SIGUSR2)."""
    dnsmasq, pid, log = running
    made = log.stat()
    old = Path(str(log) + ".old")
    os.replace(log, old)
    dnsmasq._cap_log("br0", pid)
    st = log.stat()
    assert (st.st_uid, st.st_gid, st.st_mode) == (made.st_uid, made.st_gid, made.st_mode)
    # told to reopen its log (SIGUSR2): dnsmasq lets the kept file go (it opens BR.log again at
    # its next line, as the user it runs as: hence the owner above)
    deadline = time.monotonic() + 10
    while old.stat().st_ino in open_inodes(pid):
        assert time.monotonic() < deadline, "dnsmasq was not told to reopen its log"
        time.sleep(0.05)


def open_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except FileNotFoundError:  # (closed meanwhile)
            pass
    return out
