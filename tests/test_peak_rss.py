"""The benches' peak RSS of a child is the child's own, not its parent's (common/peak_rss.py).

``wait4``'s ``ru_maxrss`` reported the forking parent's RSS for every child (the bench held
237 MB; every executor ``--once`` "peaked" at 237 MB). Real processes, no mocks.
"""

from __future__ import annotations

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
