"""Command subjects (events/ids.py): where a request goes decides who may send it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netledger.events.errors import InvalidId
from netledger.events.ids import (
    ADMIN_COMMAND_PREFIX,
    COMMAND_PREFIX,
    Route,
    command_subject,
    host_commands,
    parse_command_subject,
    project_commands,
)

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
names = st.from_regex(r"[a-z_]{1,12}\.[a-z_]{1,12}", fullmatch=True)


@given(name=names, project=ids)
def test_every_subject_parses_back_to_its_command(name: str, project: str) -> None:
    assert parse_command_subject(command_subject(name)) == Route(name)
    assert parse_command_subject(command_subject(name, admin=True)) == Route(name, True)
    assert parse_command_subject(command_subject(name, admin=True, project=project)) == Route(
        name, True
    )
    assert parse_command_subject(command_subject(name, project=project)) == Route(
        name, project=project
    )
    assert parse_command_subject(command_subject(name, host=project)) == Route(name, host=project)


def test_project_subjects_are_under_the_projects_permission() -> None:
    assert command_subject("fixed_ip.allocate", project="p1") == (
        "netledger.project.p1.cmd.fixed_ip.allocate"
    )
    assert project_commands("p1") == "netledger.project.p1.cmd.>"
    assert host_commands("h1") == (
        "netledger.host.h1.cmd.fixed_ip.lease",
        "netledger.host.h1.cmd.fixed_ip.release",
    )
    assert command_subject("x.y").startswith(COMMAND_PREFIX + ".")
    assert command_subject("x.y", admin=True).startswith(ADMIN_COMMAND_PREFIX + ".")


@pytest.mark.parametrize("bad", ["p.1", "p*", ">", "", "a b"])
def test_a_project_cannot_widen_or_split_its_subject(bad: str) -> None:
    with pytest.raises(InvalidId):
        command_subject("fixed_ip.allocate", project=bad)
    with pytest.raises(InvalidId):
        project_commands(bad)
    with pytest.raises(InvalidId):
        command_subject("fixed_ip.lease", host=bad)


def test_a_malformed_subject_is_no_command_subject() -> None:
    for subject in (
        "netledger.project.p1.fixed_ip.allocate",
        "netledger.project.p1",
        "netledger.host.h1.fixed_ip.lease",
        "netledger.evt.network.1",
    ):
        assert parse_command_subject(subject) is None, subject
