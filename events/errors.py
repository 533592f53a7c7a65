"""The error hierarchy of netledger.

Every error a user can see carries a stable ``code`` (scripts match on it) and optional
``details``. Wire errors (a reply from the command service) are mapped back to these classes in
one place, :func:`error_from_wire`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class NetledgerError(Exception):
    """Root of every netledger error."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(NetledgerError):
    """The request itself is malformed: nothing was decided, nothing appended."""

    code = "invalid_request"


class InvalidField(ValidationError):
    code = "invalid_field"


class InvalidId(ValidationError):
    code = "invalid_id"


class InvalidCidr(ValidationError):
    code = "invalid_cidr"


class InvalidAddress(ValidationError):
    code = "invalid_address"


class InvalidMac(ValidationError):
    code = "invalid_mac"


class UnknownCommand(ValidationError):
    code = "unknown_command"


class RequestTooLarge(ValidationError):
    code = "request_too_large"


class LimitExceeded(ValidationError):
    code = "limit_exceeded"


class Forbidden(NetledgerError):
    code = "forbidden"


class NotFound(NetledgerError):
    code = "not_found"


class NetworkNotFound(NotFound):
    code = "network_not_found"


class HostNotFound(NotFound):
    """No executor ever announced this host, or it is retired already."""

    code = "host_not_found"


class ProjectNotFound(NotFound):
    code = "project_not_found"


class PoolNotFound(NotFound):
    code = "pool_not_found"


class FixedIpNotFound(NotFound):
    code = "fixed_ip_not_found"


class InstanceNotFound(NotFound):
    code = "instance_not_found"


class FloatingIpNotFound(NotFound):
    code = "floating_ip_not_found"


class ConflictError(NetledgerError):
    """The request is valid but refused by the current state."""

    code = "conflict"


class NetworkOverlap(ConflictError):
    code = "network_overlap"


class DuplicateVlan(ConflictError):
    code = "duplicate_vlan"


class DuplicateVni(ConflictError):
    code = "duplicate_vni"


class DuplicateBridge(ConflictError):
    code = "duplicate_bridge"


class VlanOutOfRange(ValidationError):
    code = "vlan_out_of_range"


class VniOutOfRange(ValidationError):
    code = "vni_out_of_range"


class RangeTooSmall(ValidationError):
    code = "range_too_small"


class RangeExhausted(ConflictError):
    """The range holds too few subnets of the size asked for that are free of networks in use
    (details: ``found``, ``requested``)."""

    code = "range_exhausted"


class NetworkInUse(ConflictError):
    code = "network_in_use"


class HostInUse(ConflictError):
    """A host cannot be retired while addresses are allocated there (details: ``addresses``)
    or a live network names it as its network host (details: ``networks``)."""

    code = "host_in_use"


class NetworkNotAssociated(ConflictError):
    code = "network_not_associated"


class NoFreeNetwork(ConflictError):
    code = "no_free_network"


class ProjectHasNetwork(ConflictError):
    """One network per project: creating another one for it is refused."""

    code = "project_has_network"


class WrongNetworkProject(ConflictError):
    code = "wrong_project"


class AllocationError(ConflictError):
    code = "allocation_error"


class AddressExhausted(AllocationError):
    code = "address_exhausted"


class MacInUse(AllocationError):
    code = "mac_in_use"


class MacMismatch(ConflictError):
    code = "mac_mismatch"


class PoolExists(ConflictError):
    code = "pool_exists"


class PoolOverlap(ConflictError):
    code = "pool_overlap"


class FloatingIpExhausted(AllocationError):
    code = "floating_ip_exhausted"


class FloatingIpNotOwned(Forbidden):
    code = "floating_ip_not_owned"


class FloatingIpAssociated(ConflictError):
    code = "floating_ip_associated"


class FloatingIpNotAssociated(ConflictError):
    code = "floating_ip_not_associated"


class Unavailable(NetledgerError):
    """The service could not reach or write the log (retryable)."""

    code = "unavailable"


class ConflictRetriesExhausted(Unavailable):
    code = "conflict_retries_exhausted"


class ReservedCommandId(ValidationError):
    """The command id is in the namespace of reverts (``revert-``), which only a revert under
    its own id takes: a revert is found, retried and linked to what it undid by that id
    (events/revert.py ``command_id_for``). Details: ``command_id``; for a revert sent under
    another id, ``expected`` (its own)."""

    code = "reserved_command_id"


class CommandIdReused(ConflictError):
    """A retry whose first attempt stored its events (the log refused them again: same message
    ids inside its duplicate window) but whose answer the service no longer keeps, and whose
    decision now comes out otherwise (the state changed since): look the result up, or send
    a new command id."""

    code = "command_id_reused"


class LogNotFound(NetledgerError):
    """The NATS server holds no netledger log: the JetStream stream does not exist there
    (nothing created it yet — ``netledger serve`` does —, or this is another server or
    account). Details: ``url``."""

    code = "log_not_found"


class LogNotCreated(NetledgerError):
    """The NATS server refused to create (or update) the netledger log's stream with this
    definition — more replicas than its cluster has, limits of the account. Details:
    ``reason`` (the server's words)."""

    code = "log_not_created"


class LogUnavailable(Unavailable):
    """The log cannot take this write now: JetStream disabled or without quorum, the stream in
    a failed state, or no acknowledgement in time. Details: ``reason`` (the server's own words
    when it gave any) and ``outcome`` — ``not_applied`` (refused before anything was stored)
    or ``unknown`` (the append may have landed). Retrying with the same command id is safe
    either way: a command is never applied twice."""

    code = "log_unavailable"


class LogStorageFull(LogUnavailable):
    """The log's storage is full, or below the free-space reserve kept so that it never
    fills (details: ``free_bytes``, ``reserve_bytes``, ``store``). Reads keep working."""

    code = "log_storage_full"


class DecodeError(NetledgerError):
    """A message on the stream could not be decoded (recorded and skipped by readers)."""

    code = "decode_error"


class Unfoldable(NetledgerError):
    """A stored event, well formed, whose values the fold cannot take (an address that is not
    one, a CIDR that does not parse): recorded and skipped by readers, as an undecodable one."""

    code = "unfoldable_event"


class LogRegression(NetledgerError):
    """The stream's last sequence is lower than one this reader has already seen."""

    code = "log_regression"


class LogDiverged(LogRegression):
    """The stream's message at a sequence this reader handled is another (or gone): the log was
    restored from an older backup, or replaced, under a running reader — and written past where
    the reader was, so its last sequence alone does not tell. Handled as a regression."""

    code = "log_diverged"


def _all_subclasses(cls: type[NetledgerError]) -> list[type[NetledgerError]]:
    out: list[type[NetledgerError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[str, type[NetledgerError]] = {NetledgerError.code: NetledgerError}


def _by_code(code: str) -> type[NetledgerError]:
    """The class of ``code``, looked up again among every subclass defined so far when it is
    not known yet: errors defined in other modules (``revert_raced`` in events/revert.py,
    imported after this one) were read back as a plain NetledgerError."""
    cls = _BY_CODE.get(code)
    if cls is None:
        for sub in _all_subclasses(NetledgerError):
            _BY_CODE.setdefault(sub.code, sub)
        cls = _BY_CODE.get(code, NetledgerError)
    return cls


def error_from_wire(payload: dict[str, Any]) -> NetledgerError:
    """Rebuild the error class a service reply names (unknown codes stay NetledgerError)."""
    code = str(payload.get("code", NetledgerError.code))
    cls = _by_code(code)
    details = payload.get("details") or {}
    err = cls(str(payload.get("message", code)), **(details if isinstance(details, dict) else {}))
    if cls is NetledgerError and code != NetledgerError.code:
        err.code = code  # type: ignore[misc]
    return err


def all_error_codes() -> list[str]:
    """Every code of the error classes defined so far (import a module to count its own)."""
    _by_code("")
    return sorted(_BY_CODE)
