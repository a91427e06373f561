"""Every route is either public by name or guarded by authentication and authorisation.

A new route without `authorize(...)` fails here, before it can ship unguarded.
"""

from __future__ import annotations

from starlette.routing import Match, Route

from referral.api import PUBLIC_ROUTES
from referral.auth.dependencies import current_actor
from referral.db import request_session
from referral.routing import ProblemRoute
from tests.routes import all_routes, api_routes, concrete_path, guards, walk


def test_the_inventory_sees_the_routes(app):
    # Guards against an inventory that passes because it found nothing to check.
    paths = {(i.method, i.path) for i in api_routes(app)}
    assert ("POST", "/api/v1/auth/token") in paths
    assert ("PATCH", "/api/v1/admin/users/{user_id}") in paths
    assert len(paths) >= 20


def test_every_route_is_public_by_name_or_guarded(app):
    unguarded = []
    for info in api_routes(app):
        if (info.method, info.path) in PUBLIC_ROUTES:
            continue
        calls = list(walk(info.route.dependant))
        if not guards(info.route) or current_actor not in calls:
            unguarded.append(f"{info.method} {info.path}")
    assert unguarded == []


def test_non_api_routes_are_all_on_the_public_list(app):
    others = [i for i in all_routes(app) if not i.is_api]
    assert others, "the docs routes should be listed"
    for info in others:
        assert (info.method, info.path) in PUBLIC_ROUTES, f"{info.method} {info.path}"


def test_public_list_names_only_routes_that_exist(app):
    existing = {(i.method, i.path) for i in all_routes(app)}
    assert set(PUBLIC_ROUTES) <= existing


def test_public_routes_are_few_and_none_touches_case_data():
    assert len(PUBLIC_ROUTES) <= 10
    for _method, path in PUBLIC_ROUTES:
        assert "/cases" not in path
        assert "/referrals" not in path


async def test_every_guarded_route_answers_401_without_a_token(client, app):
    checked = 0
    for info in api_routes(app):
        if (info.method, info.path) in PUBLIC_ROUTES:
            continue
        response = await client.request(info.method, concrete_path(info))
        assert response.status_code == 401, f"{info.method} {info.path}: {response.status_code}"
        assert response.headers["www-authenticate"] == "Bearer"
        checked += 1
    assert checked >= 15


def test_every_route_is_in_the_apps_own_table(app):
    # An included router stays a nested table, matched level by level on every request:
    # 4-5 % of an audited read (ADR 0018).
    assert [type(r).__name__ for r in app.routes if not isinstance(r, Route)] == []


def test_every_route_that_takes_the_session_opens_the_request_transaction(app):
    # ProblemRoute opens the request's transaction around the handler; under any other
    # route class the session dependency has none to hand out.
    takes_session = [i for i in api_routes(app) if request_session in walk(i.route.dependant)]
    assert len(takes_session) >= 20
    assert [i.path for i in takes_session if not isinstance(i.route, ProblemRoute)] == []


def test_a_route_refuses_by_its_fixed_part_only_what_starlette_would_refuse(app):
    """ProblemRoute.matches refuses a path outside the route's fixed part at once; it must
    answer every request exactly as Starlette's match does (APIRoute.matches)."""
    routes = [info.route for info in api_routes(app) if isinstance(info.route, ProblemRoute)]
    paths = {concrete_path(info) for info in all_routes(app)}
    paths |= {"/", "/api/v1", "/api/v1/", "/api/v1/cases/", "/api/v1/casesx", "/livez/"}
    paths |= {path + "/" for path in list(paths)} | {path.upper() for path in list(paths)}
    refused_early = 0
    for route in routes:
        for path in sorted(paths):
            for method in ("GET", "POST", "PATCH"):
                for root_path in ("", "/behind-a-proxy"):
                    scope = {
                        "type": "http",
                        "method": method,
                        "path": root_path + path,
                        "root_path": root_path,
                    }
                    expected = super(ProblemRoute, route).matches(dict(scope))
                    assert route.matches(dict(scope)) == expected, (route.path, scope)
                    if expected[0] is Match.NONE and not root_path:
                        refused_early += not (root_path + path).startswith(route._fixed_prefix)
    assert refused_early > len(routes) * len(paths)  # the shortcut was taken, and agreed
