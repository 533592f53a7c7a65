"""The kernel itself marks a link dump interrupted, and the dump handed out is a whole one.

Another process (``ip -batch``, started and stopped by the test) creates and deletes bridges
in the namespace while 300 others stay; links are dumped meanwhile until the kernel has marked
a try (NLM_F_DUMP_INTR) and a dump came back after it. Measured by hand on this machine's
kernel (6.18), 30.7% of the tries of such a dump were marked (932 of 3,031 tries without a
redo), up to 4 in a row — the loop's bound is never near. A dump handed out holds each lasting link
once, as a quiet dump does; all :data:`DUMP_TRIES` tries marked is :class:`DumpInterrupted`,
counted and dumped again.

Real namespace (root; deleted at the end), real kernel.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from netledger.executor import nlencode, nlparse
from netledger.executor.errors import DumpInterrupted
from netledger.executor.netlink import Dump, RtSocket
from tests.executor.test_executor_index_race import ns as ns

pytestmark = pytest.mark.netns

LASTING = 300
#: dumps at most before the test gives up on seeing the flag (it comes within a few)
BOUND = 2000


def _names(s: RtSocket) -> Counter[str]:
    def read(dump: Dump) -> Counter[str]:
        return Counter(nlparse.link(d, a, b).name or "" for d, a, b in dump)

    return s.read_raw(nlencode.link_dump(), nlencode.RTM_GETLINK, read)


def test_a_dump_the_kernel_marks_interrupted_is_dumped_again(ns: str, tmp_path: Path) -> None:
    subprocess.run(
        ["ip", "-n", ns, "-batch", "-"],
        input="".join(f"link add b{i} type bridge\n" for i in range(LASTING)),
        text=True,
        check=True,
    )
    with RtSocket(ns) as s:
        quiet = _names(s)
        assert len(quiet) == LASTING + 1  # and lo
        # more than the test will need: it is stopped once the flag was seen
        script = tmp_path / "churn"
        script.write_text(
            "".join(f"link add c{i % 4} type bridge\nlink del c{i % 4}\n" for i in range(50000))
        )
        churn = subprocess.Popen(
            ["ip", "-n", ns, "-force", "-batch", str(script)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            dumps = gave_up = 0
            after: Counter[str] | None = None
            while after is None and dumps < BOUND:
                dumps += 1
                marked = s.interrupted
                try:
                    got = _names(s)
                except DumpInterrupted:
                    gave_up += 1
                    continue
                # the lasting links, each once, as a quiet dump has them
                assert Counter({k: v for k, v in got.items() if not k.startswith("c")}) == quiet
                assert all(v == 1 for v in got.values())
                if s.interrupted > marked:
                    after = got
        finally:
            churn.kill()
            churn.wait()
        assert after is not None, f"no dump marked interrupted in {dumps} ({gave_up} gave up)"
        assert s.interrupted >= 1
        # and the quiet kernel agrees (a churned bridge may be left: the batch was stopped)
        final = _names(s)
        assert Counter({k: v for k, v in final.items() if not k.startswith("c")}) == quiet
