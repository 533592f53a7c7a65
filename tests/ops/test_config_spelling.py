"""A bad value in the config file is printed as TOML spells it, the way the user wrote it.

Found by review: the ``config_bad_value`` error printed Python's repr (``True``, ``'a.db'``,
``None``), a spelling that is not in the file and is not TOML. The error code and the exit
status stay as they were."""

from __future__ import annotations

import datetime
import math
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from netledger.cli import cli
from netledger.ops.config import toml_spelling


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('once = "yes"', 'projector.run.once = "yes": expected true or false'),
        ("batch-size = true", "projector.run.batch-size = true: expected a number"),
        ('db = ["a.db", [1]]', 'projector.run.db = ["a.db", [1]]: expected a single value'),
        ('batch-size = "it\'s \\"many\\"\\t"', 'batch-size = "it\'s \\"many\\"\\t": '),
        ("batch-size = { a = 1, 'b c' = false }", 'batch-size = { a = 1, "b c" = false }: '),
        (
            "batch-size = 1979-05-27T07:32:00Z",
            "batch-size = 1979-05-27T07:32:00+00:00: a date or time",
        ),
    ],
)
def test_the_bad_value_is_printed_as_toml(tmp_path: Path, line: str, shown: str) -> None:
    path = tmp_path / "netledger.toml"
    path.write_text(f"[projector.run]\n{line}\n")
    r = CliRunner().invoke(cli, ["--config", str(path), "projector", "run", "--once"])
    assert r.exit_code == 1, r.output
    assert "error [config_bad_value]" in r.output
    assert shown in r.output, r.output


toml_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text()
    | st.datetimes()
    | st.dates()
    | st.times(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(toml_values)
def test_the_spelling_reads_back_as_the_same_value(value: object) -> None:
    """What is printed is TOML: pasted back into the file it is the very value read."""
    text = f"x = {toml_spelling(value)}\n"
    assert _same(tomllib.loads(text)["x"], value), text


def test_a_few_spellings() -> None:
    assert [toml_spelling(v) for v in (True, False, 1.5, float("-inf"), "a\nb", [], {})] == [
        "true",
        "false",
        "1.5",
        "-inf",
        '"a\\nb"',
        "[]",
        "{}",
    ]
    assert toml_spelling(datetime.date(2026, 12, 7)) == "2026-12-07"
