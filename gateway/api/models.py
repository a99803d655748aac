"""``GET /v1/models/{model}``: one catalog model in OpenAI's model shape (the same object
``GET /v1/models`` lists). Model ids contain dots and may contain slashes, hence ``:path``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.pipeline import gateway_of
from gateway.errors import model_not_found


async def retrieve_model(request: Request) -> Response:
    gateway = gateway_of(request)
    await gateway.tenants.authenticate(request.headers)
    name = request.path_params["model"]
    entry = gateway.catalog.get(name)
    if entry is None:
        raise model_not_found(name)
    return Response(orjson.dumps({"id": name, "object": "model", "created": 0,
                                  "owned_by": entry.provider}),
                    media_type="application/json")


routes = [Route("/v1/models/{model:path}", retrieve_model, methods=["GET"])]
