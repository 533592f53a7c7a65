"""Errors of the replay and audit tools, all under :class:`ReplayError` with stable codes."""

from __future__ import annotations

from netledger.events.errors import NetledgerError


class ReplayError(NetledgerError):
    """Root of the replay and audit tools' errors."""

    code = "replay_error"


class NaiveTime(ReplayError):
    """A time was given without a time zone: which moment it names is ambiguous."""

    code = "naive_time"


class BadTime(ReplayError):
    """A time that is not ISO 8601."""

    code = "bad_time"


class OutputExists(ReplayError):
    """The output file exists and --force was not given."""

    code = "output_exists"


class OutputUnwritable(ReplayError):
    """The output file cannot be created (its folder is missing or not one, no permission)."""

    code = "output_unwritable"


class ProjectionMismatch(ReplayError):
    """``verify``: the projection differs from a fresh rebuild of the same log prefix."""

    code = "projection_mismatch"


class SnapshotMismatch(ReplayError):
    """``verify --snapshots``: a stored snapshot differs from the fold of the log up to its
    sequence."""

    code = "snapshot_mismatch"


class SnapshotUnusable(ReplayError):
    """``verify --snapshots``: a stored snapshot cannot be used (hash, format, fold version,
    another stream); a service skips it and folds the log instead."""

    code = "snapshot_unusable"


class StreamNotEmpty(ReplayError):
    """``import``: the target stream holds messages that are not the file's first ones."""

    code = "stream_not_empty"


class BadExport(ReplayError):
    """``import``: a line of the file is not an export line (or lines are out of order)."""

    code = "bad_export"


class ImportInterrupted(ReplayError):
    """``import``: the server refused an append part way (another writer, a duplicate id)."""

    code = "import_interrupted"


class SeqBeyondStream(ReplayError):
    """A sequence was asked for that the stream does not (yet) have."""

    code = "seq_beyond_stream"
