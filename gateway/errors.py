"""Error types and their OpenAI-shaped HTTP form: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    """An error the client should see, with the HTTP status and OpenAI error fields it maps to."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_response(self) -> Response:
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )

    def sse_event(self) -> bytes:
        """The error as a final SSE event, for failures after a stream has started."""
        return b"data: " + orjson.dumps(self.body()) + b"\n\n"


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model {model!r} does not exist in this gateway's catalog (see GET /v1/models).",
        param="model",
        code="model_not_found",
    )


def unauthorized() -> GatewayError:
    return GatewayError(
        401,
        "Missing or invalid API key. Send it as 'Authorization: Bearer <key>'.",
        type="authentication_error",
        code="invalid_api_key",
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large"
    )


def overloaded(limit: int) -> GatewayError:
    return GatewayError(
        429,
        f"The gateway is serving its maximum of {limit} concurrent requests; retry shortly.",
        type="rate_limit_error",
        code="gateway_overloaded",
        headers={"Retry-After": "1"},
    )
