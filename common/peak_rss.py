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


def group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (the fifth field of ``/proc/<pid>/stat``)."""
    out: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # gone
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            out.append(int(name))
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` (a child of this process) and every process below it; return once all
    of them have exited (``pid`` is left to be reaped). Killed alone, a bench's executor left
    its dnsmasq running, a serve its nats-server (found by review).

    When ``pid`` leads a process group of its own (started with ``process_group=0``), the
    whole group is stopped and killed too: a process whose parent exited first (a daemon's
    double fork) is re-parented to init, no longer below ``pid``, but still in its group (found
    by review: the walk by parent pid missed it). A group signal reaches a process forked while
    it is sent as well (the kernel restarts that fork), so none is born after it. Below that,
    each process is stopped before its children are listed: a stopped process forks no more,
    and a child of it that exits stays a zombie, its pid not reused, until the tree is killed;
    so one in a group of its own (serve's nats-server) is found while its parent lives. One
    that leaves both (``setsid``, its parent exiting first) is not found."""
    fds: dict[int, int] = {}
    try:
        try:
            leads = os.getpgid(pid) == pid
        except ProcessLookupError:
            leads = False  # reaped by another: nothing left to kill by its group
        if leads:
            os.killpg(pid, signal.SIGSTOP)
        todo = [pid, *(group_members(pid) if leads else ())]
        while todo:
            p = todo.pop()
            if p in fds:
                continue
            try:
                fd = os.pidfd_open(p)
            except ProcessLookupError:
                continue  # gone already (its parent reaped it)
            fds[p] = fd
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGSTOP)
            halted(p)
            todo += children(p)
        for fd in fds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        for fd in fds.values():
            # readable once the process has exited (a zombie or reaped: its files are closed)
            select.select([fd], [], [])
    finally:
        for fd in fds.values():
            os.close(fd)


def wait_peak(
    proc: subprocess.Popen[bytes], poll: float = 0.005, timeout: float | None = None
) -> tuple[int, int]:
    """Wait for ``proc`` (started by ``subprocess.Popen``, which returns once the child has
    exec'd): its exit status as ``os.wait4`` gives it and the peak RSS of its largest process
    (itself or one it started), KiB. Killed after ``timeout`` seconds, with every process it
    started that still runs (:func:`kill_tree`).

    Start ``proc`` with ``process_group=0``: then a process it started whose parent exited
    first is killed too. A terminal's ^C then reaches this process only, so an interruption
    here (KeyboardInterrupt) kills the child's tree before it goes on."""
    deadline = None if timeout is None else time.monotonic() + timeout
    peaks: dict[int, int] = {}
    try:
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
    except BaseException:
        kill_tree(proc.pid)
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status, max(peaks.values(), default=0)
