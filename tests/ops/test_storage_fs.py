"""A real small filesystem for the storage tests (issue 16): a tmpfs mounted by the test, and a
ballast file that fills it (another process filling the disk) and is removed to free it."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


@contextlib.contextmanager
def tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_mib`` MiB at ``path`` (root only); always unmounted."""
    if os.geteuid() != 0:
        raise AssertionError(
            "mounting a tmpfs needs root (the storage tests need a real small filesystem);"
            " CI runs as root"
        )
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        # Lazy: a process of the test that still holds a file open must not leave it mounted.
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0, name: str = "ballast") -> Path:
    """Write a ballast file under ``path`` until ``leave`` bytes are free (0: until the
    filesystem says ENOSPC). Returns the file."""
    target = path / name
    with target.open("ab", buffering=0) as f:  # unbuffered: no flush fails at close
        if leave == 0:
            # At once (one fallocate): a writer of the store hits ENOSPC before serve's watcher
            # samples the free space again — the cliff, not the reserve.
            try:
                os.posix_fallocate(f.fileno(), 0, free_bytes(path))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        while True:
            room = free_bytes(path) - leave
            if room <= 0:
                break
            try:
                f.write(b"\0" * min(CHUNK, room))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        if leave == 0:
            # The last pages: a byte at a time would be slow, 4 KiB at a time is exact enough.
            for _ in range(1 << 16):
                try:
                    f.write(b"\0" * 4096)
                except OSError:
                    break
    return target
