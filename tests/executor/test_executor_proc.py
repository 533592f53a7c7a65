"""executor/proc.py: a helper program that overstays is killed, and the executor never waits
for it without limit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netledger.executor import nft, proc
from netledger.executor.errors import NftError


def test_output_and_status_like_subprocess_run() -> None:
    p = proc.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper()); sys.exit(3)"],
        input="abc",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (p.returncode, p.stdout.strip()) == (3, "ABC")


def test_a_program_that_overstays_is_killed_and_reported() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        proc.run(["sleep", "30"], capture_output=True, timeout=0.3)


def test_nft_overstaying_is_an_nft_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nft, "NFT_TIMEOUT", 0.3)
    with pytest.raises(NftError) as err:
        nft._run(["sleep", "30"])
    assert "did not finish" in err.value.message
