"""An error class defined in a module imported after events/errors.py (the revert's codes in
events/revert.py and revert_compensate.py) is read back from a reply as itself, not as a plain
NetledgerError carrying its code (noticed by review h113)."""

from __future__ import annotations

from netledger.events.errors import ConflictError, all_error_codes, error_from_wire
from netledger.events.revert import RevertRaced
from netledger.events.revert_compensate import RevertConflict


def test_a_code_defined_in_a_later_module_is_read_back_as_its_class() -> None:
    raced = error_from_wire({"code": "revert_raced", "message": "m", "details": {"seq": 7}})
    assert type(raced) is RevertRaced and isinstance(raced, ConflictError)
    conflict = error_from_wire({"code": "revert_conflict", "message": "m"})
    assert type(conflict) is RevertConflict
    assert {"revert_raced", "revert_conflict"} <= set(all_error_codes())


def test_an_unknown_code_stays_a_netledger_error_with_its_code() -> None:
    err = error_from_wire({"code": "from_a_newer_service", "message": "m"})
    assert err.code == "from_a_newer_service"
