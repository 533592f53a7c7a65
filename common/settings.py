"""What every command line part shares: the global options as :class:`Settings` (handed to a
command by ``@pass_settings``), :func:`run` for a command's coroutine, and the data folder.

The root (netledger/cli.py) builds the Settings from the global options; the parts' own
``cli.py`` modules (projector, executor, replay) only take them from here, so no part imports the
root.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from netledger.common.output import Output, fail, mask_urls
from netledger.events.codec import Actor
from netledger.events.errors import LogNotFound, NetledgerError, Unavailable

#: Where the root group's ``--config`` option (ops/config.py) records the file it read, in the
#: root context's ``meta``: any room's command reads it with :func:`config_path`.
CONFIG_PATH_META = "netledger.config_path"


def config_path(ctx: click.Context) -> Path | None:
    """The file the running command was configured from (None: none was found)."""
    p = ctx.find_root().meta.get(CONFIG_PATH_META)
    return p if isinstance(p, Path) else None


def default_data_dir() -> Path:
    return Path(os.environ.get("NETLEDGER_DATA") or Path.home() / ".local/share/netledger")


DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass
class Settings:
    nats: str | None
    output: Output
    creds: str | None
    user: str | None
    password: str | None
    actor: Actor
    inbox_prefix: str | None = None
    as_host: str | None = None
    #: --command-timeout: seconds a command keeps asking while no command service answers
    command_timeout: float | None = None

    @property
    def as_json(self) -> bool:
        """JSON output chosen (--json, --format json, --json-lines, at either position)."""
        return self.output.as_json

    @property
    def url(self) -> str:
        """The NATS URL commands use: ``--nats`` / ``NATS_URL`` / the configuration file's;
        else the URL of the ``netledger serve`` running on this machine (``find_serve_url``:
        ``serve --port N`` or ``--data DIR`` needs no ``--nats`` for the commands after it, as
        ``show`` needs no ``--db``); else :data:`DEFAULT_URL`."""
        if self.nats:
            return self.nats
        if self._url is None:
            found = None
            if self.find_serve_url is not None:
                try:
                    found = self.find_serve_url()
                except Exception:  # a pointer folder we cannot read: the default, as before
                    found = None
            self._url = found or DEFAULT_URL
        return self._url

    @property
    def url_source(self) -> str:
        """Where :attr:`url` came from when no URL was given: ``serve`` (a serve running on
        this machine) or ``default``; ``given`` otherwise."""
        if self.nats:
            return "given"
        return "default" if self.url == DEFAULT_URL else "serve"

    #: how a projection is found on this machine when no ``--db`` is given: the root wires
    #: in :func:`netledger.ops.locate.projection_db` (this room imports no part)
    find_projection: Callable[[str | None], Path] | None = None
    #: the NATS URLs of the ``netledger serve`` processes running on this machine, named when
    #: the default URL cannot be reached: the root wires in :func:`netledger.ops.locate.running`
    local_serves: Callable[[], list[str]] | None = None
    #: the NATS URL of the ``netledger serve`` a command without ``--nats`` goes to (None: no
    #: single one runs here): the root wires in :func:`netledger.ops.locate.serve_url`
    find_serve_url: Callable[[], str | None] | None = None
    _url: str | None = field(default=None, init=False, repr=False)

    def projection(self, db: Path | None, nats_url: str | None = None) -> Path:
        """``db`` if given, else the projection found on this machine (``find_projection``)."""
        if db:
            return db
        if self.find_projection is None:
            raise RuntimeError("Settings.find_projection is not wired (netledger/cli.py does)")
        try:
            return self.find_projection(self.nats if nats_url is None else nats_url)
        except NetledgerError as err:
            fail(err, self.as_json)

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "creds": self.creds,
            "user": self.user,
            "password": self.password,
            "inbox_prefix": self.inbox_prefix,
        }


pass_settings = click.make_pass_decorator(Settings)


def run(settings: Settings, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    try:
        return asyncio.run(fn())
    except NetledgerError as err:
        fail(serve_hint(err, settings), settings.as_json)
    except Exception as exc:
        known = log_not_found(exc, settings.url) or no_answer(exc, settings)
        if known is None:
            raise
        fail(known, settings.as_json)


def serve_hint(err: NetledgerError, settings: Settings) -> NetledgerError:
    """``err``, naming the ``netledger serve`` running here when it is a failure to reach the
    default URL while that serve listens elsewhere (review h130: ``serve --port`` or a second
    serve, and every later command went to 4222 and said only "connection refused")."""
    if (
        not isinstance(err, Unavailable)
        or settings.nats is not None
        or settings.local_serves is None
        or not err.message.startswith("cannot connect to NATS at")
    ):
        return err
    try:
        urls = [u for u in settings.local_serves() if u != settings.url]
    except Exception:  # a hint: a pointer folder we cannot read leaves the error as it was
        return err
    if not urls:
        return err
    if len(urls) == 1:
        hint = (
            f" A `netledger serve` on this machine listens on {mask_urls(urls[0])}:"
            f" give --nats {mask_urls(urls[0])} or set NATS_URL."
        )
    else:  # each named: "(and 1 more)" left the operator to find the other's port (h136)
        hint = (
            f" {len(urls)} `netledger serve`s on this machine listen on"
            f" {', '.join(mask_urls(u) for u in urls)}: give --nats with one of them or set"
            " NATS_URL."
        )
    # the connect failure ends without a full stop: "(tried for 5 s) A `netledger serve` ..."
    stop = "" if err.message.endswith(".") else "."
    return type(err)(err.message + stop + hint, **err.details)


def no_answer(exc: BaseException, settings: Settings) -> Unavailable | None:
    """A request to the NATS server (JetStream's API) that got no answer in time, as an error
    users get instead of nats-py's traceback (found by review: ``serve`` with a user whose
    replies are denied — per-role credentials without their inbox prefix — ended in one)."""
    import nats.errors

    if not isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError):
        return None
    hint = (
        " (with per-role credentials: the inbox prefix must be the one the user may read,"
        " --inbox-prefix or NETLEDGER_INBOX; `netledger auth init` writes it beside the"
        " password)"
        if (settings.user or settings.creds or "@" in settings.url) and not settings.inbox_prefix
        else ""
    )
    url = mask_urls(settings.url)
    return Unavailable(
        f"the NATS server at {url} did not answer a request in time{hint}",
        url=url,
        where=_where(exc),
    )


def _where(exc: BaseException) -> str | None:
    """The innermost line of netledger's own code the error passed through (``file:line
    function``): a daemon ended by a request that got no answer says which request it was
    (the traceback is not printed for this error)."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__") or "")
        if name.startswith("netledger."):
            found = f"{name}:{tb.tb_lineno} {tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    return found


#: JetStream's error code for "stream not found"
ERR_STREAM_NOT_FOUND = 10059


def log_not_found(exc: BaseException, url: str) -> LogNotFound | None:
    """A command's failure because the server has no netledger stream (every reader of the log
    asks for it first), as the error users get instead of nats-py's traceback."""
    from nats.js.errors import NotFoundError

    if not isinstance(exc, NotFoundError) or exc.err_code != ERR_STREAM_NOT_FOUND:
        return None
    return LogNotFound(
        f"the NATS server at {url} holds no netledger log ({exc.description}):"
        " `netledger serve` creates it - or is --nats pointing at another server or account?",
        url=url,
    )
