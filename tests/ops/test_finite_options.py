"""Every period, timeout and wait option refuses nan and the infinities as a usage error
(exit 2, naming the option): click's FloatRange passes nan on (it compares false with both
bounds), and an infinite period is none (review h110 found it on executor run's options)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from netledger.cli import cli

CASES = [
    ["--command-timeout", "{v}", "status"],
    ["serve", "--release-timeout", "{v}"],
    ["serve", "--projector-linger-ms", "{v}"],
    ["serve", "--projector-live-period", "{v}"],
    ["projector", "run", "--linger-ms", "{v}"],
    ["projector", "run", "--live-period", "{v}"],
    ["status", "--wait", "{v}"],
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(x for x in a if x != "{v}"))
def test_a_non_finite_number_is_a_usage_error_naming_the_option(
    argv: list[str], value: str
) -> None:
    args = [value if a == "{v}" else a for a in argv]
    option = next(a for a in argv if a.startswith("--"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "not a finite number" in result.output or "range" in result.output
