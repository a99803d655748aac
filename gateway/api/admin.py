"""The admin API (keys, usage), authorised only by ``GATEWAY_ADMIN_KEY``, and ``GET /v1/usage``
where a client key reads its own usage. Secrets are shown once, at creation and rotation; lists
show the display prefix, never a hash.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.pipeline import gateway_of
from gateway.errors import ErrorCode, GatewayError, bad_request, unauthorized
from gateway.server.requests import read_json
from gateway.tenants.admin import TenantAdmin
from gateway.tenants.keys import KeyLimits, ModelLimit
from gateway.tenants.ledger import GroupBy, UsageQuery, to_csv
from gateway.tenants.teams import TeamRecord

MAX_DAYS = 366


class KeyPatch(BaseModel):
    """What a PATCH may change; the limits sit inline, as in the key file."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    team: str | None = Field(None, max_length=200)
    models: list[str] | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_parallel: int | None = Field(None, ge=1)
    budget_daily_usd: Decimal | None = Field(None, ge=0)
    budget_monthly_usd: Decimal | None = Field(None, ge=0)
    model_limits: dict[str, ModelLimit] | None = None
    end_user_rpm: int | None = Field(None, ge=1)
    end_user_budget_daily_usd: Decimal | None = Field(None, ge=0)
    end_user_budget_monthly_usd: Decimal | None = Field(None, ge=0)
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class KeyCreate(KeyPatch):
    id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = Field(min_length=1, max_length=200)  # type: ignore[assignment]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _invalid(exc: ValidationError) -> GatewayError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if p != "limits") or None
    return bad_request(f"{where}: {err['msg']}" if where else err["msg"], param=where)


async def _admin(request: Request) -> TenantAdmin:
    tenants = gateway_of(request).tenants
    if tenants.admin.is_admin(request.headers):
        return tenants.admin
    if not tenants.settings.admin_key:
        raise GatewayError(ErrorCode.PERMISSION_DENIED,
                           "The admin API is off: set GATEWAY_ADMIN_KEY to turn it on.")
    try:
        await tenants.authenticate(request.headers)
    except GatewayError:
        raise unauthorized() from None
    raise GatewayError(ErrorCode.PERMISSION_DENIED,
                       "This is a client key; the admin API needs the admin key.")


async def _body(request: Request, model: type[KeyPatch]) -> KeyPatch:
    body = await read_json(request, gateway_of(request).settings.max_body_bytes)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _limits_of(patch: KeyPatch) -> dict[str, Any]:
    fields = patch.model_fields_set & set(KeyLimits.model_fields)
    return {name: getattr(patch, name) for name in fields}


async def create_key(request: Request) -> Response:
    admin = await _admin(request)
    spec = await _body(request, KeyCreate)
    assert isinstance(spec, KeyCreate)
    try:
        limits = KeyLimits.model_validate({k: v for k, v in _limits_of(spec).items()
                                           if v is not None})
        record, secret = await admin.create_key(spec.name, spec.team, limits, spec.expires_at,
                                                  spec.metadata or {}, spec.id)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return _json({**record.public(), "key": secret}, 201)


async def list_keys(request: Request) -> Response:
    admin = await _admin(request)
    return _json({"object": "list", "data": [r.public() for r in await admin.keys()]})


async def get_key(request: Request) -> Response:
    admin = await _admin(request)
    return _json((await admin.key(request.path_params["key_id"])).public())


async def update_key(request: Request) -> Response:
    admin = await _admin(request)
    patch = await _body(request, KeyPatch)
    changes: dict[str, Any] = {k: getattr(patch, k) for k in patch.model_fields_set
                               if k not in KeyLimits.model_fields}
    limits = _limits_of(patch)
    if limits:
        changes["limits"] = limits
    try:
        record = await admin.update_key(request.path_params["key_id"], changes)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return _json(record.public())


async def revoke_key(request: Request) -> Response:
    admin = await _admin(request)
    return _json((await admin.revoke_key(request.path_params["key_id"])).public())


async def rotate_key(request: Request) -> Response:
    admin = await _admin(request)
    record, secret = await admin.rotate_key(request.path_params["key_id"])
    return _json({**record.public(), "key": secret})


async def _object(request: Request) -> dict[str, Any]:
    body = await read_json(request, gateway_of(request).settings.max_body_bytes)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


async def create_team(request: Request) -> Response:
    """A team whose budgets, rate limits and models hold for all of its keys together (a key
    joins it by naming it in its ``team``)."""
    admin = await _admin(request)
    body = await _object(request)
    try:
        record = TeamRecord.model_validate({**body, "source": "admin"})
    except ValidationError as exc:
        raise _invalid(exc) from None
    return _json((await admin.save_team(record, new=True)).public(), 201)


async def list_teams(request: Request) -> Response:
    admin = await _admin(request)
    return _json({"object": "list", "data": [t.public() for t in await admin.team_records()]})


async def get_team(request: Request) -> Response:
    admin = await _admin(request)
    return _json((await admin.team(request.path_params["name"])).public())


async def update_team(request: Request) -> Response:
    admin = await _admin(request)
    current = await admin.team(request.path_params["name"])
    body = await _object(request)
    if "name" in body and body["name"] != current.name:
        raise bad_request("A team's name cannot change: its keys name it.", param="name")
    try:
        record = TeamRecord.model_validate({**current.model_dump(), **body, "source": "admin"})
    except ValidationError as exc:
        raise _invalid(exc) from None
    return _json((await admin.save_team(record, new=False)).public())


async def delete_team(request: Request) -> Response:
    admin = await _admin(request)
    return _json((await admin.delete_team(request.path_params["name"])).public())


def _date(value: str | None, name: str, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} must be a date, YYYY-MM-DD.", param=name) from None


def _query(request: Request, *, key: str | None = None) -> tuple[UsageQuery, str]:
    params = request.query_params
    today = datetime.now(UTC).date()
    end = _date(params.get("to"), "to", today)
    start = _date(params.get("from"), "from", end.replace(day=1))
    if start > end:
        raise bad_request("'from' is after 'to'.", param="from")
    if end - start > timedelta(days=MAX_DAYS):
        raise bad_request(f"At most {MAX_DAYS} days at a time.", param="from")
    group: list[GroupBy] = []
    for part in (params.get("group_by") or "key,model,day").split(","):
        try:
            item = GroupBy(part.strip())
        except ValueError:
            raise bad_request(f"group_by takes key, team, model, day, user (not "
                              f"{part.strip()!r}).",
                              param="group_by") from None
        if item not in group:
            group.append(item)
    fmt = params.get("format") or "json"
    if fmt not in ("json", "csv"):
        raise bad_request("format is json or csv.", param="format")
    return UsageQuery(start, end, key=key or params.get("key") or None,
                      team=params.get("team") or None, model=params.get("model") or None,
                      group_by=tuple(group), user=params.get("user") or None), fmt


async def _usage_response(admin: TenantAdmin, query: UsageQuery, fmt: str) -> Response:
    rows = await admin.usage(query)
    if fmt == "csv":
        return Response(to_csv(query, rows), media_type="text/csv; charset=utf-8")
    return _json({"object": "list", "from": query.start.isoformat(), "to": query.end.isoformat(),
                  "group_by": [g.value for g in query.group_by], "data": rows})


async def admin_usage(request: Request) -> Response:
    admin = await _admin(request)
    query, fmt = _query(request)
    return await _usage_response(admin, query, fmt)


async def own_usage(request: Request) -> Response:
    """A client key's own usage, whatever ``key`` or ``team`` it asks for."""
    tenants = gateway_of(request).tenants
    tenant = await tenants.authenticate(request.headers)
    if tenant.anonymous:
        raise GatewayError(ErrorCode.PERMISSION_DENIED,
                           "Usage is per key; this gateway has no client keys.")
    asked = request.query_params.get("key")
    if asked and asked != tenant.id:
        raise GatewayError(ErrorCode.PERMISSION_DENIED, "A key can read only its own usage.",
                           param="key")
    query, fmt = _query(request, key=tenant.id)
    return await _usage_response(tenants.admin, query, fmt)


routes = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key_id}", get_key, methods=["GET"]),
    Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
    Route("/admin/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/admin/teams", create_team, methods=["POST"]),
    Route("/admin/teams", list_teams, methods=["GET"]),
    Route("/admin/teams/{name}", get_team, methods=["GET"]),
    Route("/admin/teams/{name}", update_team, methods=["PATCH"]),
    Route("/admin/teams/{name}", delete_team, methods=["DELETE"]),
    Route("/admin/usage", admin_usage, methods=["GET"]),
    Route("/v1/usage", own_usage, methods=["GET"]),
]
