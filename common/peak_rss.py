"""Peak resident memory of a child process, as the child itself used it.

``wait4``'s ``ru_maxrss`` cannot say it: Linux records the RSS of the memory a process leaves
at ``exec`` — for a freshly forked child, its parent's — so a child of a process that holds
400 MB reports at least 400 MB, whatever it used. A process's ``VmHWM`` (``/proc/<pid>/status``)
is the peak of its own memory since its ``exec``; it is gone once the process exits, so it is
polled while the child runs (a peak reached in the last poll interval before exiting is missed).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from pathlib import Path


def vmhwm_kib(pid: int) -> int:
    """Peak RSS of a running process (VmHWM), KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    except OSError:
        pass
    return out


def descendants(pid: int, depth: int = 1) -> list[tuple[int, int]]:
    """(pid, depth) of every process below ``pid`` (children at depth 1)."""
    out: list[tuple[int, int]] = []
    for child in children(pid):
        out.append((child, depth))
        out += descendants(child, depth + 1)
    return out


def tree_hwm(pid: int, peaks: dict[int, int]) -> None:
    """Record in ``peaks`` (pid -> KiB) the VmHWM of ``pid`` and of every process below it."""
    for p in (pid, *(c for c, _ in descendants(pid))):
        kib = vmhwm_kib(p)
        if kib > peaks.get(p, 0):
            peaks[p] = kib


def halted(pid: int, tries: int = 1000) -> bool:
    """Wait until ``pid`` is stopped or gone: a signal takes effect when the process next
    enters the kernel, and one running on another CPU may fork before. False if it is not
    after ``tries`` milliseconds (one in an uninterruptible sleep)."""
    for _ in range(tries):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in "tTZX":
            return True
        time.sleep(0.001)
    return False


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` (a child of this process) and every process below it; return once all
    of them have exited (``pid`` is left to be reaped). Killed alone, a bench's executor left
    its dnsmasq running, a serve its nats-server (found by review).

    Each process is stopped before its children are listed: a stopped process forks no more,
    and a child of it that exits stays a zombie, its pid not reused, until the tree is killed.
    A process that ``setsid``s and leaves (its parent exiting first) is no longer below ``pid``
    and is not found."""
    fds: list[int] = []
    try:
        todo = [pid]
        while todo:
            p = todo.pop()
            try:
                fd = os.pidfd_open(p)
            except ProcessLookupError:
                continue  # gone already (its parent reaped it)
            fds.append(fd)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGSTOP)
            halted(p)
            todo += children(p)
        for fd in fds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        for fd in fds:
            # readable once the process has exited (a zombie or reaped: its files are closed)
            select.select([fd], [], [])
    finally:
        for fd in fds:
            os.close(fd)


def wait_peak(
    proc: subprocess.Popen[bytes], poll: float = 0.005, timeout: float | None = None
) -> tuple[int, int]:
    """Wait for ``proc`` (started by ``subprocess.Popen``, which returns once the child has
    exec'd): its exit status as ``os.wait4`` gives it and the peak RSS of its largest process
    (itself or one it started), KiB. Killed after ``timeout`` seconds, with every process it
    started that still runs (:func:`kill_tree`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    peaks: dict[int, int] = {}
    while True:
        tree_hwm(proc.pid, peaks)
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.monotonic() > deadline:
            kill_tree(proc.pid)
            _, status, _ = os.wait4(proc.pid, 0)
            break
        time.sleep(poll)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status, max(peaks.values(), default=0)
