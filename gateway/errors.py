"""Every error a client can see: one code enum, one table from code to HTTP status and error
types, and the two wire shapes (OpenAI's and Anthropic's) they are rendered in.

Like TensorZero's ``error.rs``: a new failure is a new ``ErrorCode`` and one row in ``TABLE``;
no route picks a status on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import orjson
from starlette.responses import Response


class ErrorCode(StrEnum):
    # The client's request
    INVALID_JSON = "invalid_json"
    INVALID_VALUE = "invalid_value"
    MISSING_PARAMETER = "missing_required_parameter"
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    EMPTY_BODY = "empty_body"
    BATCH_TOO_LARGE = "batch_too_large"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_NOT_SUPPORTED = "model_not_supported"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    UNKNOWN_URL = "unknown_url"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TOO_LARGE = "request_too_large"
    BODY_TIMEOUT = "request_body_timeout"
    HEADER_TIMEOUT = "request_header_timeout"
    HEADERS_TOO_LARGE = "request_headers_too_large"
    # Who the client is and what it may spend
    INVALID_API_KEY = "invalid_api_key"
    KEY_EXPIRED = "key_expired"
    PERMISSION_DENIED = "permission_denied"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    GATEWAY_OVERLOADED = "gateway_overloaded"
    LIMITS_UNAVAILABLE = "limits_unavailable"
    KEY_IMMUTABLE = "key_immutable"
    CLIENT_CLOSED = "client_closed_request"
    # The upstream
    UPSTREAM_REJECTED = "upstream_rejected"  # an upstream 4xx passed through as it came
    UPSTREAM_AUTH_FAILED = "upstream_auth_failed"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_CONNECT = "upstream_connect"
    UPSTREAM_PROTOCOL = "upstream_protocol"
    UPSTREAM_TRUNCATED = "upstream_truncated"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    CIRCUIT_OPEN = "circuit_open"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    REQUEST_TIMEOUT = "request_timeout"
    STREAM_TRUNCATED = "stream_truncated"
    STREAM_TIMEOUT = "stream_timeout"
    STREAM_PROTOCOL = "stream_protocol"
    STREAM_CONNECT = "stream_connect"
    STREAM_STATUS = "stream_status"
    # The gateway itself
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Row:
    status: int
    openai_type: str
    anthropic_type: str


_BAD = Row(400, "invalid_request_error", "invalid_request_error")
_UPSTREAM = Row(502, "upstream_error", "api_error")
_STREAM = Row(502, "upstream_error", "api_error")

TABLE: dict[ErrorCode, Row] = {
    ErrorCode.INVALID_JSON: _BAD,
    ErrorCode.INVALID_VALUE: _BAD,
    ErrorCode.MISSING_PARAMETER: _BAD,
    ErrorCode.UNSUPPORTED_PARAMETER: _BAD,
    ErrorCode.EMPTY_BODY: _BAD,
    ErrorCode.BATCH_TOO_LARGE: _BAD,
    ErrorCode.MODEL_NOT_FOUND: Row(404, "invalid_request_error", "not_found_error"),
    ErrorCode.MODEL_NOT_SUPPORTED: _BAD,
    ErrorCode.MODEL_NOT_ALLOWED: Row(403, "permission_error", "permission_error"),
    ErrorCode.UNKNOWN_URL: Row(404, "invalid_request_error", "not_found_error"),
    ErrorCode.NOT_FOUND: Row(404, "invalid_request_error", "not_found_error"),
    ErrorCode.METHOD_NOT_ALLOWED: Row(405, "invalid_request_error", "invalid_request_error"),
    ErrorCode.REQUEST_TOO_LARGE: Row(413, "invalid_request_error", "request_too_large"),
    ErrorCode.BODY_TIMEOUT: Row(408, "invalid_request_error", "timeout_error"),
    ErrorCode.HEADER_TIMEOUT: Row(408, "invalid_request_error", "timeout_error"),
    ErrorCode.HEADERS_TOO_LARGE: Row(431, "invalid_request_error", "invalid_request_error"),
    ErrorCode.INVALID_API_KEY: Row(401, "authentication_error", "authentication_error"),
    ErrorCode.KEY_EXPIRED: Row(401, "authentication_error", "authentication_error"),
    ErrorCode.PERMISSION_DENIED: Row(403, "permission_error", "permission_error"),
    ErrorCode.RATE_LIMIT_EXCEEDED: Row(429, "rate_limit_error", "rate_limit_error"),
    ErrorCode.INSUFFICIENT_QUOTA: Row(429, "insufficient_quota", "rate_limit_error"),
    ErrorCode.GATEWAY_OVERLOADED: Row(429, "rate_limit_error", "rate_limit_error"),
    ErrorCode.LIMITS_UNAVAILABLE: Row(503, "server_error", "overloaded_error"),
    ErrorCode.KEY_IMMUTABLE: Row(409, "invalid_request_error", "invalid_request_error"),
    ErrorCode.CLIENT_CLOSED: Row(499, "invalid_request_error", "invalid_request_error"),
    ErrorCode.UPSTREAM_REJECTED: _BAD,  # the upstream's own status travels with the error
    ErrorCode.UPSTREAM_AUTH_FAILED: _UPSTREAM,
    ErrorCode.UPSTREAM_ERROR: _UPSTREAM,
    ErrorCode.UPSTREAM_CONNECT: _UPSTREAM,
    ErrorCode.UPSTREAM_PROTOCOL: _UPSTREAM,
    ErrorCode.UPSTREAM_TRUNCATED: _UPSTREAM,
    ErrorCode.UPSTREAM_TIMEOUT: Row(504, "timeout_error", "timeout_error"),
    ErrorCode.CIRCUIT_OPEN: Row(503, "upstream_error", "overloaded_error"),
    ErrorCode.DEADLINE_EXCEEDED: Row(504, "timeout_error", "timeout_error"),
    ErrorCode.REQUEST_TIMEOUT: Row(504, "timeout_error", "timeout_error"),
    ErrorCode.STREAM_TRUNCATED: _STREAM,
    ErrorCode.STREAM_TIMEOUT: _STREAM,
    ErrorCode.STREAM_PROTOCOL: _STREAM,
    ErrorCode.STREAM_CONNECT: _STREAM,
    ErrorCode.STREAM_STATUS: _STREAM,
    ErrorCode.INTERNAL_ERROR: Row(500, "server_error", "api_error"),
}

# Anthropic's error type for a status it has one for (upstream errors passed through).
ANTHROPIC_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                       402: "billing_error", 403: "permission_error", 404: "not_found_error",
                       413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                       503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


class GatewayError(Exception):
    """An error the client should see. Its status and types come from ``TABLE``; only an
    upstream error passed through (``UPSTREAM_REJECTED``) carries the upstream's own status,
    type and code."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        upstream_status: int | None = None,
        upstream_type: str | None = None,
        upstream_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        row = TABLE[code]
        self.status = upstream_status or row.status
        self.type = upstream_type or row.openai_type
        self.anthropic_type = (ANTHROPIC_BY_STATUS.get(self.status, row.anthropic_type)
                               if upstream_status else row.anthropic_type)
        # What goes in the body's ``code``: the upstream's own for a passed-through error.
        self.code: str | None = upstream_code if code is ErrorCode.UPSTREAM_REJECTED else code.value

    def body(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's shape."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def anthropic_body(self) -> dict[str, object]:
        """Anthropic's shape."""
        return {"type": "error", "error": {"type": self.anthropic_type, "message": self.message}}

    def to_response(self) -> Response:
        return Response(orjson.dumps(self.body()), status_code=self.status,
                        media_type="application/json", headers=self.headers)

    def to_anthropic_response(self) -> Response:
        return Response(orjson.dumps(self.anthropic_body()), status_code=self.status,
                        media_type="application/json", headers=self.headers)

    def sse_event(self) -> bytes:
        """The error as a final SSE event, for failures after a stream has started."""
        return b"data: " + orjson.dumps(self.body()) + b"\n\n"


ANTHROPIC_PATHS = ("/v1/messages",)


def speaks_anthropic(path: str) -> bool:
    """Routes whose clients expect Anthropic's error shape (the Messages API's)."""
    return path.startswith(ANTHROPIC_PATHS)


def error_response(path: str, error: GatewayError) -> Response:
    """The error in the shape of the API the client called."""
    return error.to_anthropic_response() if speaks_anthropic(path) else error.to_response()


def bad_request(message: str, *, param: str | None = None,
                code: ErrorCode = ErrorCode.INVALID_VALUE) -> GatewayError:
    return GatewayError(code, message, param=param)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        ErrorCode.MODEL_NOT_FOUND,
        f"The model {model!r} does not exist in this gateway's catalog (see GET /v1/models).",
        param="model",
    )


def unauthorized() -> GatewayError:
    return GatewayError(
        ErrorCode.INVALID_API_KEY,
        "Missing or invalid API key. Send it as 'Authorization: Bearer <key>' "
        "(or 'x-api-key: <key>').",
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(ErrorCode.REQUEST_TOO_LARGE,
                        f"Request body is larger than the limit of {limit} bytes.")


def overloaded(limit: int) -> GatewayError:
    return GatewayError(
        ErrorCode.GATEWAY_OVERLOADED,
        f"The gateway is serving its maximum of {limit} concurrent requests; retry shortly.",
        headers={"Retry-After": "1"},
    )
