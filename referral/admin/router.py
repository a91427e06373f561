"""/api/v1/admin: municipalities, organisations, users. HTTP only; rules live in service.py."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from referral import audit
from referral.admin import service
from referral.admin.schemas import (
    MunicipalityCreate,
    MunicipalityPublic,
    MunicipalityUpdate,
    OrganisationCreate,
    OrganisationPublic,
    OrganisationUpdate,
    PasswordReset,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from referral.authz.dependencies import Access, authorize
from referral.concurrency import expected_version, set_etag
from referral.db import SessionDep
from referral.models import Municipality, Organisation, User
from referral.pagination import Page, PageParams, page_params
from referral.routing import ProblemRoute

router = APIRouter(prefix="/admin", tags=["admin"], route_class=ProblemRoute)

PageDep = Annotated[PageParams, Depends(page_params)]


def _auth(resource: str, action: str) -> type[Access]:
    return Annotated[Access, Depends(authorize(resource, action))]  # type: ignore[return-value]


# --- municipalities ---------------------------------------------------------------------


@router.get("/municipalities", response_model=Page[MunicipalityPublic])
async def list_municipalities(
    request: Request, session: SessionDep, page: PageDep, access: _auth("municipality", "list")
) -> Page[MunicipalityPublic]:
    rows, cursor = await service.list_visible(session, access, Municipality, page)
    audit.record(
        session,
        request,
        action="admin.municipality.list",
        resource_type="municipality",
        resource_ids=[r.id for r in rows],
    )
    return Page(items=[MunicipalityPublic.model_validate(r) for r in rows], next_cursor=cursor)


@router.post("/municipalities", response_model=MunicipalityPublic, status_code=201)
async def create_municipality(
    request: Request,
    response: Response,
    session: SessionDep,
    body: MunicipalityCreate,
    access: _auth("municipality", "create"),
) -> MunicipalityPublic:
    municipality = await service.create_municipality(session, body)
    audit.record(
        session,
        request,
        action="admin.municipality.create",
        resource_type="municipality",
        resource_ids=[municipality.id],
        fields=body.model_fields_set,
    )
    set_etag(response, municipality.version)
    return MunicipalityPublic.model_validate(municipality)


@router.get("/municipalities/{municipality_id}", response_model=MunicipalityPublic)
async def read_municipality(
    request: Request,
    response: Response,
    session: SessionDep,
    municipality_id: uuid.UUID,
    access: _auth("municipality", "read"),
) -> MunicipalityPublic:
    municipality = await service.get_visible(session, access, Municipality, municipality_id)
    audit.record(
        session,
        request,
        action="admin.municipality.read",
        resource_type="municipality",
        resource_ids=[municipality.id],
    )
    set_etag(response, municipality.version)
    return MunicipalityPublic.model_validate(municipality)


@router.patch("/municipalities/{municipality_id}", response_model=MunicipalityPublic)
async def update_municipality(
    request: Request,
    response: Response,
    session: SessionDep,
    municipality_id: uuid.UUID,
    body: MunicipalityUpdate,
    access: _auth("municipality", "update"),
) -> MunicipalityPublic:
    municipality = await service.get_visible(session, access, Municipality, municipality_id)
    changed = await service.update_simple(
        session,
        Municipality,
        municipality,
        expected_version(request),
        body.model_dump(exclude_unset=True),
    )
    audit.record(
        session,
        request,
        action="admin.municipality.update",
        resource_type="municipality",
        resource_ids=[municipality.id],
        fields=changed,
    )
    set_etag(response, municipality.version)
    return MunicipalityPublic.model_validate(municipality)


# --- organisations ----------------------------------------------------------------------


@router.get("/organisations", response_model=Page[OrganisationPublic])
async def list_organisations(
    request: Request, session: SessionDep, page: PageDep, access: _auth("organisation", "list")
) -> Page[OrganisationPublic]:
    rows, cursor = await service.list_visible(session, access, Organisation, page)
    audit.record(
        session,
        request,
        action="admin.organisation.list",
        resource_type="organisation",
        resource_ids=[r.id for r in rows],
    )
    return Page(items=[OrganisationPublic.model_validate(r) for r in rows], next_cursor=cursor)


@router.post("/organisations", response_model=OrganisationPublic, status_code=201)
async def create_organisation(
    request: Request,
    response: Response,
    session: SessionDep,
    body: OrganisationCreate,
    access: _auth("organisation", "create"),
) -> OrganisationPublic:
    organisation = await service.create_organisation(session, body)
    audit.record(
        session,
        request,
        action="admin.organisation.create",
        resource_type="organisation",
        resource_ids=[organisation.id],
        fields=body.model_fields_set,
    )
    set_etag(response, organisation.version)
    return OrganisationPublic.model_validate(organisation)


@router.get("/organisations/{organisation_id}", response_model=OrganisationPublic)
async def read_organisation(
    request: Request,
    response: Response,
    session: SessionDep,
    organisation_id: uuid.UUID,
    access: _auth("organisation", "read"),
) -> OrganisationPublic:
    organisation = await service.get_visible(session, access, Organisation, organisation_id)
    audit.record(
        session,
        request,
        action="admin.organisation.read",
        resource_type="organisation",
        resource_ids=[organisation.id],
    )
    set_etag(response, organisation.version)
    return OrganisationPublic.model_validate(organisation)


@router.patch("/organisations/{organisation_id}", response_model=OrganisationPublic)
async def update_organisation(
    request: Request,
    response: Response,
    session: SessionDep,
    organisation_id: uuid.UUID,
    body: OrganisationUpdate,
    access: _auth("organisation", "update"),
) -> OrganisationPublic:
    organisation = await service.get_visible(session, access, Organisation, organisation_id)
    changed = await service.update_simple(
        session,
        Organisation,
        organisation,
        expected_version(request),
        body.model_dump(exclude_unset=True),
    )
    audit.record(
        session,
        request,
        action="admin.organisation.update",
        resource_type="organisation",
        resource_ids=[organisation.id],
        fields=changed,
    )
    set_etag(response, organisation.version)
    return OrganisationPublic.model_validate(organisation)


# --- users ------------------------------------------------------------------------------


@router.get("/users", response_model=Page[UserPublic])
async def list_users(
    request: Request, session: SessionDep, page: PageDep, access: _auth("user", "list")
) -> Page[UserPublic]:
    rows, cursor = await service.list_visible(session, access, User, page)
    audit.record(
        session,
        request,
        action="admin.user.list",
        resource_type="user",
        resource_ids=[r.id for r in rows],
    )
    return Page(items=[UserPublic.model_validate(r) for r in rows], next_cursor=cursor)


@router.post("/users", response_model=UserPublic, status_code=201)
async def create_user(
    request: Request,
    response: Response,
    session: SessionDep,
    body: UserCreate,
    access: _auth("user", "create"),
) -> UserPublic:
    user = await service.create_user(session, access.policy, body)
    audit.record(
        session,
        request,
        action="admin.user.create",
        resource_type="user",
        resource_ids=[user.id],
        fields=body.model_fields_set - {"password"},
    )
    set_etag(response, user.version)
    return UserPublic.model_validate(user)


@router.get("/users/{user_id}", response_model=UserPublic)
async def read_user(
    request: Request,
    response: Response,
    session: SessionDep,
    user_id: uuid.UUID,
    access: _auth("user", "read"),
) -> UserPublic:
    user = await service.get_visible(session, access, User, user_id)
    audit.record(
        session, request, action="admin.user.read", resource_type="user", resource_ids=[user.id]
    )
    set_etag(response, user.version)
    return UserPublic.model_validate(user)


@router.patch("/users/{user_id}", response_model=UserPublic)
async def update_user(
    request: Request,
    response: Response,
    session: SessionDep,
    user_id: uuid.UUID,
    body: UserUpdate,
    access: _auth("user", "update"),
) -> UserPublic:
    user = await service.get_visible(session, access, User, user_id)
    user, changed = await service.update_user(
        session, access.policy, user, expected_version(request), body
    )
    audit.record(
        session,
        request,
        action="admin.user.update",
        resource_type="user",
        resource_ids=[user.id],
        fields=changed,
    )
    set_etag(response, user.version)
    return UserPublic.model_validate(user)


@router.post("/users/{user_id}/password", status_code=status.HTTP_204_NO_CONTENT)
async def reset_password(
    request: Request,
    session: SessionDep,
    user_id: uuid.UUID,
    body: PasswordReset,
    access: _auth("user", "reset_password"),
) -> Response:
    user = await service.get_visible(session, access, User, user_id)
    await service.reset_password(session, user, expected_version(request), body.new_password)
    audit.record(
        session,
        request,
        action="admin.user.reset_password",
        resource_type="user",
        resource_ids=[user.id],
        fields=["password_hash"],
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
