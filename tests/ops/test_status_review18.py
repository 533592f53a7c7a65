"""Review hrev18: `status` showed serve's default reserve of 5% as "reserve 4%".

The reserve is ``int(total * 5 / 100)`` bytes and the cell printed ``reserve * 100 // total``:
two truncations, so on most filesystems (any whose size in bytes is not a multiple of 20) the
fresh quick-start's `netledger status` said ``ok, 23% free (reserve 4%)`` for the 5% that
`serve --help` and docs/operations.md (``ok, 63% free (reserve 5%)``) give.
"""

from __future__ import annotations

from netledger.ops.config import parse_reserve
from netledger.ops_cli import log_cell


def test_the_default_reserve_shows_as_five_percent() -> None:
    reserve = parse_reserve("5%")
    for blocks in (1001, 1_234_567, 61_440_001):
        total = blocks * 4096
        store = {"free_bytes": total // 2, "total_bytes": total, "reserve_bytes": reserve.of(total)}
        assert log_cell({"state": "ok", "store": store}) == "ok, 50% free (reserve 5%)", blocks
