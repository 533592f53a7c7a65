"""Counts in human output take the noun's number (`1 row`, `2 rows`): "1 rows", "1 address(es)"
and "2 restart(s)" were slips a user met. One helper, common/output.py ``plural``."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from netledger.common.output import plural


def test_plural_takes_the_nouns_number() -> None:
    assert plural(1, "row") == "1 row"
    assert [plural(n, "row") for n in (0, 2)] == ["0 rows", "2 rows"]
    assert plural(1, "address", "addresses") == "1 address"
    assert plural(3, "address", "addresses") == "3 addresses"


@given(st.integers(min_value=0), st.text(alphabet="abcdefgh", min_size=1))
def test_plural_is_the_number_then_one_form(n: int, word: str) -> None:
    assert plural(n, word) == (f"{n} {word}" if n == 1 else f"{n} {word}s")


def _candidate(address: str) -> dict[str, object]:
    return {
        "address": address,
        "network_id": "1",
        "instance": "i-1",
        "mac": "02:16:3e:00:00:01",
        "host": "h1",
        "unseen_for": 4000.0,
        "first_absent_seq": 3,
        "report_seq": 9,
    }


@pytest.mark.parametrize(("n", "said"), [(0, "0 addresses"), (1, "1 address"), (2, "2 addresses")])
def test_reclaim_says_address_or_addresses(n: int, said: str) -> None:
    from netledger.reclaim_cli import render

    rows = [_candidate(f"10.0.0.{i + 3}") for i in range(n)]
    held = [{**r, "seen_on": ["h2"]} for r in rows]
    large = [{"address": r["address"], "network_id": "1", "host": "h1"} for r in rows]
    text = render(
        {"dry_run": True, "grace": 3600, "candidates": rows, "held_back": held, "too_large": large}
    )
    assert text.splitlines()[0] == f"would reclaim {said} (grace 3600s)"
    if n:
        assert f"held back {said} another host still sees" in text
        assert f"left {said} to an operator" in text
    assert "(es)" not in text


def test_status_says_restart_and_sequence_in_the_singular() -> None:
    from netledger.ops.status import problems_of
    from netledger.ops_cli import log_cell

    assert log_cell({"state": "ok", "restarts": 1}) == "ok, 1 restart"
    lagging = {"component": "command-service", "id": "s1", "lag": 1, "lagging": True}
    projector = {"db": "p.db", "lag": 1, "lagging": True, "rejected": 1}
    stream = {"name": "NETLEDGER", "replicas": 1, "leader": "n1", "peers": []}
    said = problems_of(stream, [lagging], [projector], [], max_lag=0)
    assert "command-service s1 is 1 sequence behind" in said, said
    assert "projector p.db is 1 sequence behind (> 0)" in said, said
    assert "projector p.db rejected 1 stream message" in said, said


def test_verify_says_1_row() -> None:
    from netledger.replay.cli import _print_verify

    one = {"equal": True, "rows": 1, "rebuilt_rows": 1, "sha256": "0" * 64}
    two = {**one, "rows": 2, "rebuilt_rows": 2}
    report = {
        "db": "p.db",
        "last_seq": 3,
        "stream_last_seq": 3,
        "equal": True,
        "tables": {"networks": one, "fixed_ips": two},
        "differences": [],
        "rejected_events": {"count": 0, "first": []},
    }
    runner = CliRunner()

    @click.command()
    def show() -> None:
        _print_verify(report)

    out = runner.invoke(show).output.splitlines()
    assert out[1].split()[2:4] == ["1", "row"], out
    assert out[2].split()[2:4] == ["2", "rows"], out
