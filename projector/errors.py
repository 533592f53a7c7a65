"""Errors of the projector, all under :class:`ProjectorError` with stable codes."""

from __future__ import annotations

from netledger.events.errors import NetledgerError


class ProjectorError(NetledgerError):
    """Root of the projector's errors."""

    code = "projector_error"


class ProjectionNotFound(ProjectorError):
    """No projection database at the given path (or not one netledger made)."""

    code = "projection_not_found"


def not_a_projection(path: object, why: BaseException) -> ProjectionNotFound:
    """A file that is there but holds no projection (no SQLite database, no projection_state):
    said alike by the readers and the writer."""
    return ProjectionNotFound(f"{path} is not a netledger projection ({why})", db=str(path))


class SchemaTooNew(ProjectorError):
    """The database was migrated by a newer netledger than this one."""

    code = "projection_schema_too_new"


class SchemaTooOld(ProjectorError):
    """The database was written by an older netledger: this code's readers need its newer
    columns; a projector of this version migrates it when it opens it."""

    code = "projection_schema_too_old"


class ProjectionAhead(ProjectorError):
    """The projection has applied sequences the stream does not have: wrong or restored stream."""

    code = "projection_ahead"


class StreamMismatch(ProjectorError):
    """The projection was built from another stream (same name, different creation time)."""

    code = "projection_stream_mismatch"


class LogDiverged(ProjectorError):
    """The log's message at the projection's newest row is another: the stream was restored from
    an older backup and written past what the projection holds (same name, same creation time)."""

    code = "projection_log_diverged"


class ProjectorStopped(ProjectorError):
    """The projector stopped (closed, or its writer failed) before reaching a sequence."""

    code = "projector_stopped"
