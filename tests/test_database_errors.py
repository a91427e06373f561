"""Which database errors are the database being unavailable (503, try again) and which are
faults (500): a pure rule, checked on the driver's SQLSTATE wherever it sits in the chain."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from referral.db import database_unavailable, unavailable_error


class DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def _wrapped(sqlstate: str) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, DriverError(sqlstate))


@pytest.mark.parametrize(
    ("sqlstate", "detail"),
    [
        ("08006", "not reachable"),  # connection failure
        ("08003", "not reachable"),  # connection does not exist (asyncpg's lost connection)
        ("57P01", "not reachable"),  # admin shutdown
        ("57P03", "not reachable"),  # cannot connect now: starting up
        ("53300", "busy"),  # too many connections (server, role or database limit)
        ("53100", "busy"),  # disk full
        ("53200", "busy"),  # out of memory
    ],
)
def test_the_database_unable_to_serve_is_503_with_retry_after(sqlstate, detail):
    for error in (_wrapped(sqlstate), DriverError(sqlstate)):
        assert database_unavailable(error)
        problem = unavailable_error(error)
        assert problem.status == 503
        assert detail in problem.detail
        assert int(problem.headers["Retry-After"]) > 0


def test_a_state_found_as_the_cause_counts_too():
    outer = RuntimeError("while sealing")
    outer.__cause__ = _wrapped("53300")
    assert database_unavailable(outer)
    assert "busy" in unavailable_error(outer).detail


def test_an_exhausted_pool_is_busy():
    assert database_unavailable(PoolTimeout("QueuePool limit reached"))
    assert "busy" in unavailable_error(PoolTimeout("QueuePool limit reached")).detail


@pytest.mark.parametrize(
    "sqlstate",
    [
        "23505",  # unique violation: a conflict the code handles, else a fault
        "40001",  # serialization failure
        "42P01",  # undefined table: a broken deployment, not a busy database
        "22P02",  # invalid text representation
    ],
)
def test_other_database_errors_are_not_unavailability(sqlstate):
    assert not database_unavailable(_wrapped(sqlstate))
