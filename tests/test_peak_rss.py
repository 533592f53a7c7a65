"""The benches' peak RSS of a child is the child's own, not its parent's (common/peak_rss.py).

``wait4``'s ``ru_maxrss`` reported the forking parent's RSS for every child (the bench held
237 MB; every executor ``--once`` "peaked" at 237 MB). Real processes, no mocks.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys

from netledger.common.peak_rss import wait_peak

MIB = 1024


def _spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)


def test_a_small_child_of_a_large_parent_reports_its_own_peak() -> None:
    ballast = bytearray(300 * MIB * MIB)
    for i in range(0, len(ballast), 4096):  # touched: resident in this process
        ballast[i] = 1
    status, peak = wait_peak(_spawn("import time; time.sleep(0.2)"))
    assert status == 0
    assert 0 < peak < 100 * MIB  # a bare Python, not this process's 300 MiB
    del ballast


def test_a_child_that_grows_reports_its_growth_and_its_exit_status() -> None:
    code = "import time; b = bytearray(150 * 2**20); time.sleep(0.2); raise SystemExit(3)"
    proc = _spawn(code)
    _, peak = wait_peak(proc)
    assert proc.returncode == 3
    assert peak >= 150 * MIB


def test_a_grandchild_counts_as_the_largest_process() -> None:
    inner = "import time; b = bytearray(120 * 2**20); time.sleep(0.3)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {inner!r}])"
    _, peak = wait_peak(_spawn(code))
    assert peak >= 120 * MIB


def test_a_child_past_its_timeout_is_killed() -> None:
    proc = _spawn("import time; time.sleep(60)")
    wait_peak(proc, timeout=0.3)
    assert proc.returncode is not None and proc.returncode < 0


#: A process that starts a copy of itself ``depth`` levels down, each holding the pipe's
#: write end ``fd``, prints the pids of its line (its own first) and sleeps.
CHAIN = """
import os, subprocess, sys, time
depth, fd, code = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
below = b""
if depth:
    argv = [sys.executable, "-c", code, str(depth - 1), str(fd), code]
    p = subprocess.Popen(argv, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    below = p.stdout.readline().strip()
print(os.getpid(), below.decode(), flush=True)
time.sleep(600)
"""


def test_a_child_past_its_timeout_is_killed_with_every_process_it_started() -> None:
    """A bench's executor left its dnsmasq running, a serve its nats-server: the child alone
    was killed. Its descendants have exited when ``wait_peak`` returns: the pipe they held
    is at its end, and each one's pidfd is readable (it reports an exit)."""
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHAIN, "2", str(w), CHAIN],
        pass_fds=(w,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    os.close(w)
    below: list[int] = []
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and pids[0] == proc.pid  # (the child, its child, and that one's)
        below = [os.pidfd_open(p) for p in pids[1:]]  # running: each sleeps once it printed
        wait_peak(proc, timeout=0)
        assert proc.returncode == -signal.SIGKILL
        exited, _, _ = select.select(below, [], [], 0)
        assert sorted(exited) == sorted(below)
        assert select.select([r], [], [], 0)[0] == [r] and os.read(r, 1) == b""
    finally:
        _reap(proc, below, r)


def _reap(proc: subprocess.Popen[bytes], pidfds: list[int], r: int) -> None:
    """A test's processes gone and its descriptors closed, whatever the test found."""
    for fd in pidfds:
        with contextlib.suppress(ProcessLookupError):  # (survived: not ours to leave)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        os.close(fd)
    os.close(r)
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.returncode is None:
        proc.kill()
        proc.wait()


#: A child that forks a middle process which forks a grandchild and exits at once (a daemon's
#: double fork): the grandchild, holding the pipe's write end ``fd`` like the child, is
#: re-parented (to init or a subreaper) and no longer below the child. The child prints the
#: grandchild's pid once the middle one is gone, and sleeps.
ORPHAN = """
import os, sys, time
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        time.sleep(600)
    os._exit(0)
os.close(w)
grandchild = int(os.read(r, 20))
os.waitpid(middle, 0)
print(grandchild, flush=True)
time.sleep(600)
"""


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_process_whose_parent_exited_is_killed_with_the_child() -> None:
    """Found by review: the kill walked the tree by parent pid at kill time, so a grandchild
    whose parent had exited (re-parented away from the child) outlived the kill. The child
    leads a process group of its own (as ``wait_peak`` asks), and the grandchild is in it."""
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN],
        pass_fds=(w,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        process_group=0,
    )
    os.close(w)
    grandchild = -1
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        grandchild = os.pidfd_open(pid)
        assert _ppid(pid) != proc.pid  # re-parented: not below the child any more
        wait_peak(proc, timeout=0)
        assert proc.returncode == -signal.SIGKILL
        assert select.select([grandchild], [], [], 0)[0] == [grandchild]  # it exited
        assert select.select([r], [], [], 0)[0] == [r] and os.read(r, 1) == b""
    finally:
        _reap(proc, [grandchild] if grandchild >= 0 else [], r)
