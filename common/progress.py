"""Progress for long work: a rich bar when a person watches (stderr is a terminal), nothing
otherwise (scripts and logs get the one result line)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: advance(done, description=None): how many of the total are done now (absolute, not a
#: delta); a description replaces the bar's (a new phase of the work).
Advance = Callable[..., None]


@contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool | None = None
) -> Iterator[Advance]:
    """A bar on stderr while the block runs; ``enabled`` defaults to ``sys.stderr.isatty()``."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda done, description=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(done: int, description: str | None = None) -> None:
            if description is None:
                bar.update(task, completed=done)
            else:
                bar.update(task, completed=done, description=description)

        yield advance
