"""Errors of the executor, under the project's root error (stable codes for scripts)."""

from __future__ import annotations

from netledger.events.errors import NetledgerError


class ExecutorError(NetledgerError):
    code = "executor_error"


class NotPermitted(ExecutorError):
    """The executor lacks the rights to change the kernel (it must run as root)."""

    code = "executor_not_permitted"


class NamespaceNotFound(ExecutorError):
    """``--netns`` names a namespace that does not exist (never created on the fly)."""

    code = "netns_not_found"


class NftError(ExecutorError):
    """``nft`` is missing or refused the table."""

    code = "nft_failed"


class KernelNoAnswer(ExecutorError):
    """A netlink request got no answer in time: the pass fails (and is retried) instead of the
    executor hanging on a reply that will never come."""

    code = "kernel_no_answer"


class DumpInterrupted(ExecutorError):
    """The kernel marked every one of a read's dumps interrupted (NLM_F_DUMP_INTR: the table
    kept changing under them, so each may have missed or repeated entries): the pass or poll
    fails and is tried again, as after :class:`KernelNoAnswer`."""

    code = "kernel_dump_interrupted"
