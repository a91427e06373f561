"""Work run in a process of its own, apart from the serving worker (ADR 0025, ADR 0027).

A snapshot build holds hundreds of MiB and a minute of CPU; a walk of the trail at national
scale, minutes of hashing. In a serving worker either would take the worker's memory or its
event loop from everyone else's requests. The child is spawned (a fresh interpreter, with
none of the parent's threads or connections), computes, and sends its answer back through
a pipe. Its death closes the pipe, which reads as "ended without an answer". Cancelled (the
server stopping), the child is ended with it. A parent killed outright (SIGKILL, out of
memory) ends nothing, so the child watches for its parent's end and ends itself: its answer
would have nobody to read it. Children only compute and read; what they make is written by
the parent, so a child ended anywhere leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

# In a child: where `report` sends its progress. None in every other process.
_reporting: Connection | None = None


class ApartError(Exception):
    """The child gave no answer. Its text completes "the process …"."""


class Died(ApartError):
    def __init__(self) -> None:
        super().__init__("ended without an answer (killed, or out of memory)")


class Failed(ApartError):
    """It raised what its caller did not expect; the traceback is on the child's stderr,
    and only the exception's type comes back (its text might hold anything)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"failed ({kind})")


def report(value: Any) -> None:
    """Send progress to the parent, from a child; nothing in any other process."""
    if _reporting is not None:
        _reporting.send(("progress", value))


async def run(
    target: Callable[..., Any],
    *args: Any,
    name: str,
    expected: tuple[type[Exception], ...] = (),
    progress: Callable[[Any], None] | None = None,
) -> Any:
    """`target(*args)` in a child process: its answer, or the `expected` exception it
    raised. `progress` is called with what the child reports, as it comes (in a thread).

    Raises Died if the child ended without an answer, Failed if it raised anything else."""
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(
        target=_child, args=(sending, target, args, expected), name=name, daemon=True
    )
    child.start()
    sending.close()  # the child's end alone is left: its death is the end of the pipe
    try:
        answer = await asyncio.to_thread(_receive, receiving, progress)
    except BaseException:  # cancelled: the server is stopping
        child.terminate()
        raise
    finally:  # in a thread: a child tearing down its interpreter takes a while
        await asyncio.to_thread(child.join, 5)
    match answer:
        case ("done", value):
            return value
        case ("raised", exc):
            raise exc
        case ("failed", kind):
            raise Failed(kind)
    raise Died()


def _receive(receiving: Connection, progress: Callable[[Any], None] | None) -> tuple | None:
    with receiving:
        while True:
            try:
                kind, value = receiving.recv()
            except EOFError:
                return None
            if kind != "progress":
                return kind, value
            if progress is not None:
                progress(value)


# How a child ends when its parent has gone before it: as if killed, not as an answer.
ORPHANED_EXIT_CODE = 70
# A child's work is background work: where it and the serving worker want the same core,
# the requests go first (a nice-10 process gets about a tenth of a nice-0 one's share), and
# on an idle core the child runs at full speed all the same.
CHILD_NICENESS = 10


def _end_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:  # not a multiprocessing child
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])  # ready once the parent is gone
        os._exit(ORPHANED_EXIT_CODE)

    threading.Thread(target=watch, name="apart-parent-watch", daemon=True).start()


def _child(sending: Connection, target, args: tuple, expected: tuple) -> None:
    global _reporting
    _reporting = sending
    _end_with_parent()
    os.nice(CHILD_NICENESS)
    with sending:
        try:
            answer = ("done", target(*args))
        except expected as exc:
            answer = ("raised", exc)
        except Exception as exc:
            traceback.print_exc()
            answer = ("failed", type(exc).__name__)
        sending.send(answer)
