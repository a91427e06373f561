"""Work in a process of its own (`referral.apart`), as a mechanism: what comes back, what
is raised, what is reported on the way, and that a cancelled run leaves no process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time

import pytest

from referral import apart

NAME = "referral-test-apart"


class Expected(Exception):
    pass


def _answer(a, b):
    return {"sum": a + b, "pid": os.getpid()}


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


def _children() -> list:
    return [p for p in multiprocessing.active_children() if p.name == NAME]


async def test_the_answer_comes_back_from_another_process():
    answer = await apart.run(_answer, 2, 3, name=NAME)
    assert answer["sum"] == 5
    assert answer["pid"] != os.getpid()
    assert _children() == []


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
