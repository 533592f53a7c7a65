"""``netledger serve``: the composition root of the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from netledger.common.natsserver import EmbeddedNats, find_nats_server, server_version
from netledger.common.output import mask_urls
from netledger.events.errors import NetledgerError
from netledger.journal.loghealth import LogHealth
from netledger.journal.stream import connect, ensure_stream
from netledger.ops.locate import remove_pointer, write_pointer
from netledger.ops.status import StatusResponder
from netledger.ops.storage import (
    DEFAULT_INTERVAL,
    DEFAULT_RESERVE,
    DEFAULT_RESTARTS,
    Reserve,
    StorageWatcher,
    parse_reserve,
)
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy, own_tmpdir

log = logging.getLogger("netledger.serve")


async def serve_forever(
    *,
    nats_url: str | None,
    data_dir: Path,
    port: int,
    nats_binary: str | None,
    sync_interval: str,
    replicas: int,
    run_projector: bool,
    projector_linger: float | None = None,
    projector_metrics_port: int | None = None,
    projector_live_period: float | None = None,
    connect_kwargs: dict[str, Any] | None = None,
    release_timeout: float = 600.0,
    reclaim_after: float | None = None,
    metrics_port: int | None = None,
    auth_config: str | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    snapshots: SnapshotPolicy | None = None,
    storage_reserve: Reserve | None = None,
    storage_interval: float = DEFAULT_INTERVAL,
    nats_restarts: int = DEFAULT_RESTARTS,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server: EmbeddedNats | None = None
    #: told to stop once ready (a Ctrl-C, SIGTERM): said when everything has stopped
    asked_to_stop = False
    if nats_url is None:
        binary = find_nats_server(nats_binary)
        extra = ""
        if auth_config:
            from netledger.ops.auth import embedded_extra_config

            extra = embedded_extra_config(auth_config, data_dir)
        server = EmbeddedNats(
            data_dir=data_dir,
            port=port,
            binary=binary,
            sync_interval=sync_interval,
            extra_config=extra,
        )
        # Its name (unique) is how start() tells it from another server already on the port.
        print(
            f"netledger: running {binary} ({server_version(binary)}) as {server.server_name},"
            f" store {data_dir}",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.to_thread(server.start)
        nats_url = server.url
    try:
        conn = await connect(nats_url, name="netledger-serve", **(connect_kwargs or {}))
        try:
            await ensure_stream(conn, replicas=replicas)
            health = LogHealth()
            service = CommandService(
                conn,
                release_timeout=release_timeout,
                reclaim_grace=reclaim_after,
                snapshots=_with_tmpdir(snapshots or SnapshotPolicy(), data_dir),
                health=health,
            )
            service.on_catch_up = _say_catching_up
            # Watching the store starts before the service: a start on a full disk refuses
            # writes from the first command on.
            watcher = StorageWatcher(
                health,
                conn,
                reserve=storage_reserve or parse_reserve(DEFAULT_RESERVE),
                server=server,
                interval=storage_interval,
                max_restarts=nats_restarts,
                seen_seq=lambda: service.follower.highest_seen,
            )
            await watcher.start()
            try:
                started = await _started(service, stop)
            except BaseException:
                await watcher.close()
                raise
            if not started:
                # Told to stop while it folded the log (a long start: the whole log without a
                # usable snapshot): stopped where it was, not waited for.
                await watcher.close()
                print(
                    "netledger: stopped before the command service was ready",
                    file=sys.stderr,
                    flush=True,
                )
                return
            responder = StatusResponder.for_service(conn, service)
            await responder.start()
            from netledger.common.metrics import observe

            observability = await observe(
                conn,
                metrics_port,
                {"service": lambda: service.follower.applied_seq},
                watch=service,
            )
            projector = None
            pointer = None
            if run_projector:
                projector = await _start_projector(
                    nats_url,
                    data_dir / "projection.db",
                    projector_linger,
                    connect_kwargs,
                    projector_metrics_port,
                    projector_live_period,
                )
            # Clients on this machine find this serve (its URL; its projection, if it keeps one)
            # through it (netledger.ops.locate).
            pointer = write_pointer(
                data_dir, data_dir / "projection.db", nats_url, projection=run_projector
            )
            try:
                # (a password in the URL masked: stdout goes to journald; found by review)
                print(f"netledger ready: {mask_urls(nats_url)}", flush=True)
                if ready is not None:
                    ready.set()
                stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
                failed: asyncio.Future[Any] = service.failed or loop.create_future()
                watched = [stopper, failed]
                if projector is not None:
                    # A projector that had to stop (log regression, a broken database) stops
                    # serve too: a daemon that answers with a frozen projection is worse.
                    watched.append(asyncio.ensure_future(projector.wait_failed()))
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                asked_to_stop = stopper.done()
                for w in [*watched[2:], stopper]:
                    if not w.done():
                        w.cancel()
                if failed.done():
                    raise failed.result()
                for w in watched[2:]:
                    if w.done() and not w.cancelled():
                        err = w.result()
                        if isinstance(err, NetledgerError):
                            raise err
                        raise NetledgerError(f"projector failed: {err}")
            finally:
                remove_pointer(pointer)
                if projector is not None:
                    await projector.close()
                await observability.aclose()
                await responder.close()
                await service.close()
                await watcher.close()
        finally:
            await conn.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if asked_to_stop:
        # (stderr: stdout's one line is the ready line scripts wait for)
        print("netledger: stopped", file=sys.stderr, flush=True)


async def _start_projector(
    nats_url: str,
    db_path: Path,
    linger: float | None,
    connect_kwargs: dict[str, Any] | None,
    metrics_port: int | None = None,
    live_period: float | None = None,
) -> Any:
    """The projector as serve's child process (projector/child.py: its reading of the log
    does not share the command service's event loop), once it has opened the projection."""
    from netledger.projector.child import ProjectorProcess

    db_path.parent.mkdir(parents=True, exist_ok=True)
    projector = ProjectorProcess(
        nats_url,
        db_path,
        linger=linger,
        connect_kwargs=connect_kwargs,
        metrics_port=metrics_port,
        live_period=live_period,
    )
    await projector.start()
    return projector


async def _started(service: CommandService, stop: asyncio.Event) -> bool:
    """Start ``service``; False (and the service closed: its start cancelled, nothing of it
    left running) when ``stop`` is set first — a Ctrl-C or SIGTERM during a start that folds
    the whole log had waited for the fold's end (seconds to minutes)."""
    starting = asyncio.ensure_future(service.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        starting.cancel()
        await asyncio.wait([starting])
        await service.close()
        raise
    finally:
        stopping.cancel()
    if stop.is_set():
        await service.close()  # (cancels a start still under way; closes what it made)
        with contextlib.suppress(Exception):
            await starting  # Unavailable: closed while it started
        return False
    starting.result()  # (its error, if it failed)
    return True


def _say_catching_up(first: int, last: int, snapshot: int | None) -> None:
    """A start that folds a long stretch of the log takes seconds: say so before it."""
    since = f"after its snapshot at seq {snapshot:,}" if snapshot else "no snapshot"
    print(
        f"netledger: the command service folds {last - first + 1:,} events of the log"
        f" ({since}) before it is ready",
        file=sys.stderr,
        flush=True,
    )


def _with_tmpdir(policy: SnapshotPolicy, data_dir: Path) -> SnapshotPolicy:
    """The policy writing its bodies under serve's data folder, not the system's temp folder
    (what a killed write leaves is removed at the next start: service/snapshotter.py
    own_tmpdir), unless the caller chose a folder."""
    if policy.tmpdir is not None:
        return policy
    return dataclasses.replace(policy, tmpdir=own_tmpdir(Path(data_dir)))
