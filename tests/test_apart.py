"""Work in a process of its own (`referral.apart`), as a mechanism: what comes back, what
is raised, what is reported on the way, and that a cancelled run leaves no process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from referral import apart

NAME = "referral-test-apart"


class Expected(Exception):
    pass


def _answer(a, b):
    return {"sum": a + b, "pid": os.getpid(), "niceness": os.nice(0)}


def _reports(count):
    for n in range(count):
        apart.report(n)
    return "done"


def _raises_expected():
    raise Expected("the gate says no")


def _raises_other():
    raise ValueError("text that might hold anything")


def _dies():
    os._exit(3)


def _sleeps():
    time.sleep(60)


def _writes_its_pid_and_sleeps(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


# A serving worker in miniature: it runs a child apart and waits for its answer.
_PARENT = f"""
import asyncio, sys
from referral import apart
from tests.test_apart import _writes_its_pid_and_sleeps
asyncio.run(apart.run(_writes_its_pid_and_sleeps, sys.argv[1], name={NAME!r}))
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (nobody may reap an orphan here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _children() -> list:
    return [p for p in multiprocessing.active_children() if p.name == NAME]


async def test_the_answer_comes_back_from_another_process():
    answer = await apart.run(_answer, 2, 3, name=NAME)
    assert answer["sum"] == 5
    assert answer["pid"] != os.getpid()
    assert _children() == []


async def test_the_child_gives_way_to_the_serving_worker_for_the_cpu():
    answer = await apart.run(_answer, 2, 3, name=NAME)
    assert answer["niceness"] == min(19, os.nice(0) + apart.CHILD_NICENESS)  # 19 is the most


async def test_progress_arrives_in_order_before_the_answer():
    seen = []
    assert await apart.run(_reports, 50, name=NAME, progress=seen.append) == "done"
    assert seen == list(range(50))


def test_report_outside_a_child_does_nothing():
    apart.report(1)  # no pipe here: neither raises nor sends


async def test_an_expected_exception_is_raised_here_with_its_text():
    with pytest.raises(Expected, match="the gate says no"):
        await apart.run(_raises_expected, name=NAME, expected=(Expected,))


async def test_anything_else_is_failed_naming_only_its_type():
    with pytest.raises(apart.Failed) as raised:
        await apart.run(_raises_other, name=NAME, expected=(Expected,))
    assert str(raised.value) == "failed (ValueError)"
    assert "anything" not in str(raised.value)


async def test_a_process_that_dies_is_died():
    with pytest.raises(apart.Died, match="ended without an answer"):
        await apart.run(_dies, name=NAME)


async def test_a_cancelled_run_ends_its_process():
    running = asyncio.create_task(apart.run(_sleeps, name=NAME))
    for _ in range(200):
        if _children():
            break
        await asyncio.sleep(0.05)
    assert _children(), "the child did not start"
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert _children() == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_child_ends_itself_when_its_parent_is_killed_outright(tmp_path):
    pid_file = tmp_path / "child.pid"
    root = Path(__file__).resolve().parents[1]
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pid_file)], cwd=root)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None, "the parent ended before its child started"
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _running(child)
    finally:
        parent.send_signal(signal.SIGKILL)  # as the kernel ends a worker out of memory
        parent.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphaned = _running(child)
    if orphaned:
        os.kill(child, signal.SIGKILL)
    assert not orphaned, "the child went on with nobody to answer"
