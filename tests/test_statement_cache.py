"""The engine's compiled-statement cache finds a kept statement by its key's identity, and
never takes one statement's compiled form for another's (ADR 0020)."""

from __future__ import annotations

from sqlalchemy import column, create_engine, select, table, text

from referral.db import StatementCache
from tests.case_world import make_town, new_case

CASES = table("case_file", column("id"), column("state"))


def _compiled(engine, statement, cache: StatementCache):
    """Run `statement` through `cache` as SQLAlchemy does, and return the compiled form used."""
    with engine.connect() as connection:
        connection = connection.execution_options(compiled_cache=cache)
        result = connection.execute(statement)
        compiled = result.context.compiled
        result.close()
    return compiled


def _engine():
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE case_file (id INTEGER, state TEXT)"))
    return engine


def _count_structure_lookups(cache: StatementCache) -> list[int]:
    """Counts the lookups in `cache` that hash a statement's structure (SQLAlchemy's own
    cache, behind the identities): one element, the count so far."""
    count = [0]
    structures = cache._compiled

    class Counted:
        def get(self, key, default=None):
            count[0] += 1
            return structures.get(key, default)

        def __setitem__(self, key, value):
            structures[key] = value

    cache._compiled = Counted()  # type: ignore[assignment]
    return count


def test_a_kept_statement_is_found_by_identity_without_hashing_its_structure():
    engine, cache = _engine(), StatementCache()
    lookups = _count_structure_lookups(cache)
    kept = select(CASES.c.id).where(CASES.c.state == "submitted")
    first = _compiled(engine, kept, cache)
    assert lookups == [1]
    assert _compiled(engine, kept, cache) is first
    assert _compiled(engine, kept, cache) is first
    assert lookups == [1]  # found by identity, not by structure


def test_an_equal_statement_built_again_shares_the_compiled_form_through_its_structure():
    engine, cache = _engine(), StatementCache()
    lookups = _count_structure_lookups(cache)
    first = _compiled(engine, select(CASES.c.id).where(CASES.c.state == "a"), cache)
    again = _compiled(engine, select(CASES.c.id).where(CASES.c.state == "b"), cache)
    assert again is first  # the value is a parameter: one shape, one compiled form
    assert lookups == [2]


def test_statements_of_another_shape_never_share_a_compiled_form():
    engine, cache = _engine(), StatementCache()
    shapes = [
        select(CASES.c.id),
        select(CASES.c.state),
        select(CASES.c.id).where(CASES.c.state == "a"),
        select(CASES.c.id).where(CASES.c.state != "a"),
        select(CASES.c.id).order_by(CASES.c.id),
    ]
    for _ in range(2):
        forms = [_compiled(engine, shape, cache) for shape in shapes]
        assert len({id(form) for form in forms}) == len(shapes)
        assert [form.string for form in forms] == [str(shape.compile(engine)) for shape in shapes]


def test_statements_built_per_request_do_not_grow_the_identities_without_bound():
    engine, cache = _engine(), StatementCache()
    kept = select(CASES.c.id)
    kept_form = _compiled(engine, kept, cache)
    for n in range(StatementCache._IDENTITIES_AT_MOST + 50):
        _compiled(engine, select(CASES.c.id).where(CASES.c.state == str(n)).limit(n + 1), cache)
    assert len(cache._by_identity) <= StatementCache._IDENTITIES_AT_MOST
    assert _compiled(engine, kept, cache) is kept_form


def test_one_statement_run_with_other_columns_or_many_rows_gets_its_own_compiled_form():
    """The same statement object compiles differently for other parameter names and for
    many rows; its identity alone must not find the form compiled for the first."""
    engine, cache = _engine(), StatementCache()
    add = CASES.insert()
    with engine.begin() as connection:
        connection = connection.execution_options(compiled_cache=cache)
        forms = [
            connection.execute(add, parameters).context.compiled
            for parameters in (
                {"id": 1},
                {"id": 2, "state": "submitted"},
                [{"id": 3, "state": "a"}, {"id": 4, "state": "b"}],
                {"id": 5},
            )
        ]
        stored = connection.execute(text("SELECT id, state FROM case_file ORDER BY id")).all()
    assert [form.string for form in forms[:2]] == [
        "INSERT INTO case_file (id) VALUES (?)",
        "INSERT INTO case_file (id, state) VALUES (?, ?)",
    ]
    assert forms[2] is not forms[1]
    assert forms[3] is forms[0]
    assert stored == [(1, None), (2, "submitted"), (3, "a"), (4, "b"), (5, None)]


async def test_an_audited_read_finds_every_statement_it_runs_by_identity(app, client, world):
    """The served app uses the cache, and the statements of a read are the kept ones: after
    the first read, no read of a case hashes a statement's structure."""
    town = await make_town(client, world)
    case_ids = [await new_case(client, town.referrer) for _ in range(3)]
    cache = app.state.engine.sync_engine.get_execution_options()["compiled_cache"]
    assert isinstance(cache, StatementCache)
    coordinator = town.coordinator.headers
    assert (await client.get(f"/api/v1/cases/{case_ids[0]}", headers=coordinator)).is_success
    lookups = _count_structure_lookups(cache)
    for case_id in case_ids:
        response = await client.get(f"/api/v1/cases/{case_id}", headers=coordinator)
        assert response.status_code == 200
        assert response.json()["id"] == str(case_id)
    assert lookups == [0]
