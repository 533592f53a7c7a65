"""Review h114 of cd5615e ("every period, timeout and wait option refuses nan and the
infinities"): the duration options (ops/duration.py ``DURATION``: serve --reclaim-after,
--snapshot-min-interval, --storage-check-interval, reclaim --grace) took any number from the
config file as it was — TOML has nan and inf, and a number skipped the text's "must be
positive" — and on the command line a duration too long for a float (400 digits) was inf."""

from __future__ import annotations

from pathlib import Path

import pytest

from netledger.cli import cli
from netledger.ops.config import ConfigBadValue, build_default_map, read_config

KEYS = [
    ("serve", "reclaim-after"),
    ("serve", "snapshot-min-interval"),
    ("serve", "storage-check-interval"),
    ("reclaim", "older-than"),
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-5", "0.0"])
@pytest.mark.parametrize(("command", "key"), KEYS, ids=lambda k: str(k))
def test_a_duration_in_the_config_file_is_positive_and_finite(
    tmp_path: Path, command: str, key: str, value: str
) -> None:
    path = tmp_path / "netledger.toml"
    path.write_text(f"[{command}]\n{key} = {value}\n")
    with pytest.raises(ConfigBadValue, match=key):
        build_default_map(cli, read_config(path), path)


@pytest.mark.parametrize(("command", "key"), KEYS, ids=lambda k: str(k))
def test_a_duration_in_the_config_file_as_a_number_is_seconds(
    tmp_path: Path, command: str, key: str
) -> None:
    path = tmp_path / "netledger.toml"
    path.write_text(f"[{command}]\n{key} = 90\n")
    got = build_default_map(cli, read_config(path), path)
    name = "grace" if key == "older-than" else key.replace("-", "_")
    assert got == {command: {name: 90}}


@pytest.mark.parametrize(("command", "key"), KEYS, ids=lambda k: str(k))
def test_a_duration_too_long_for_a_float_is_refused(tmp_path: Path, command: str, key: str) -> None:
    """As text (what the command line gives): 400 digits are inf seconds. (Read from the file,
    not run: serve given one would start.)"""
    path = tmp_path / "netledger.toml"
    path.write_text(f'[{command}]\n{key} = "{"9" * 400}s"\n')
    with pytest.raises(ConfigBadValue, match=key):
        build_default_map(cli, read_config(path), path)
