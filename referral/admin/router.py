"""/api/v1/admin: municipalities, organisations, users. HTTP only; rules live in service.py."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status
from sqlmodel.ext.asyncio.session import AsyncSession

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
from referral.errors import Forbidden
from referral.models import Municipality, Organisation, User
from referral.pagination import Page, PageParams, page_params
from referral.routing import API_PREFIX, ProblemRoute

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], route_class=ProblemRoute)

PageDep = Annotated[PageParams, Depends(page_params)]


def _auth(resource: str, action: str) -> type[Access]:
    return Annotated[Access, Depends(authorize(resource, action))]  # type: ignore[return-value]


# --- municipalities and organisations: the same four routes, with their own rules --------


def _directory_routes(
    *,
    resource: str,
    plural: str,
    model: type,
    create_schema: type,
    update_schema: type,
    public: type,
    create: Callable[[AsyncSession, Any], Awaitable[Any]],
) -> None:
    item = f"/{plural}/{{{resource}_id}}"

    @router.get(f"/{plural}", response_model=Page[public], name=f"list_{plural}")
    async def list_items(
        request: Request, session: SessionDep, page: PageDep, access: _auth(resource, "list")
    ) -> Page[Any]:
        rows, cursor = await service.list_visible(session, access, model, page)
        audit.record(
            session,
            request,
            action=f"admin.{resource}.list",
            resource_type=resource,
            resource_ids=[r.id for r in rows],
        )
        return Page(items=[public.model_validate(r) for r in rows], next_cursor=cursor)

    @router.post(f"/{plural}", response_model=public, status_code=201, name=f"create_{resource}")
    async def create_item(
        request: Request,
        response: Response,
        session: SessionDep,
        body: create_schema,  # type: ignore[valid-type]
        access: _auth(resource, "create"),
    ) -> Any:
        obj = await create(session, body)
        audit.record(
            session,
            request,
            action=f"admin.{resource}.create",
            resource_type=resource,
            resource_ids=[obj.id],
            fields=body.model_fields_set,
        )
        set_etag(response, obj.version)
        return public.model_validate(obj)

    @router.get(item, response_model=public, name=f"read_{resource}")
    async def read_item(
        request: Request,
        response: Response,
        session: SessionDep,
        item_id: Annotated[uuid.UUID, Path(alias=f"{resource}_id")],
        access: _auth(resource, "read"),
    ) -> Any:
        obj = await service.get_visible(session, access, model, item_id)
        audit.record(
            session,
            request,
            action=f"admin.{resource}.read",
            resource_type=resource,
            resource_ids=[obj.id],
        )
        set_etag(response, obj.version)
        return public.model_validate(obj)

    @router.patch(item, response_model=public, name=f"update_{resource}")
    async def update_item(
        request: Request,
        response: Response,
        session: SessionDep,
        item_id: Annotated[uuid.UUID, Path(alias=f"{resource}_id")],
        body: update_schema,  # type: ignore[valid-type]
        access: _auth(resource, "update"),
    ) -> Any:
        obj = await service.get_visible(session, access, model, item_id)
        changed = await service.update_simple(
            session, model, obj, expected_version(request), body.model_dump(exclude_unset=True)
        )
        audit.record(
            session,
            request,
            action=f"admin.{resource}.update",
            resource_type=resource,
            resource_ids=[obj.id],
            fields=changed,
        )
        set_etag(response, obj.version)
        return public.model_validate(obj)


_directory_routes(
    resource="municipality",
    plural="municipalities",
    model=Municipality,
    create_schema=MunicipalityCreate,
    update_schema=MunicipalityUpdate,
    public=MunicipalityPublic,
    create=service.create_municipality,
)
_directory_routes(
    resource="organisation",
    plural="organisations",
    model=Organisation,
    create_schema=OrganisationCreate,
    update_schema=OrganisationUpdate,
    public=OrganisationPublic,
    create=service.create_organisation,
)


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


@router.post(
    "/users/{user_id}/second-factor/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Clear a user's second factor: they enrol again at their next sign-in (If-Match)",
)
async def reset_second_factor(
    request: Request,
    session: SessionDep,
    user_id: uuid.UUID,
    access: _auth("user", "reset_second_factor"),
) -> Response:
    user = await service.get_visible(session, access, User, user_id)
    if user.id == access.actor.user_id:
        # otherwise a stolen administrator's password would be enough to drop their factor
        raise Forbidden("Another administrator must reset your own second factor.")
    await service.reset_second_factor(session, user, expected_version(request))
    audit.record(
        session,
        request,
        action="admin.user.reset_second_factor",
        resource_type="user",
        resource_ids=[user.id],
        fields=["totp_secret_enc", "totp_enabled_at", "recovery_codes"],
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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
