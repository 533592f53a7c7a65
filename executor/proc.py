"""Running a helper program (nft, dnsmasq, mount) without ever blocking the executor on it.

``subprocess.run(timeout=...)`` kills a program that overstays and then waits for it *without*
a limit: a program the kernel holds in uninterruptible sleep would block the reconcile pass,
and with it the daemon, forever. Here the wait after the kill is bounded too, and the caller
gets :class:`subprocess.TimeoutExpired` either way.
"""

from __future__ import annotations

import subprocess
from typing import Any

#: How long to wait for a killed program to go away before leaving it behind.
REAP_TIMEOUT = 5.0


def run(argv: list[str], *, timeout: float, input: str | None = None, **kwargs: Any) -> Any:
    """Like ``subprocess.run(argv, timeout=..., input=..., check=False, **kwargs)``."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with subprocess.Popen(argv, **kwargs) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.communicate(timeout=REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # Unkillable for now (uninterruptible sleep): leave it; skip Popen's own wait.
                proc.returncode = -9
            raise subprocess.TimeoutExpired(argv, timeout) from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
