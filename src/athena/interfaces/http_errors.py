"""Errors of the HTTP API: one JSON shape, ``{"error": {"code": ..., "message": ...}}``.

Athena errors map to statuses by type (:func:`status_for`); framework errors (malformed
JSON, wrong types, unknown routes) are rewritten into the same shape. Nothing raised by a
bad request becomes a 500: only a real storage failure or a bug does, and a bug's message
never reaches the client.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from athena.errors import (
    AthenaError,
    InvalidInput,
    NotFound,
    RecallTimeout,
    StoreLocked,
    WorkerPoolUnavailable,
)

logger = logging.getLogger("athena.http")

# Most specific first: the first class an error is an instance of decides its status.
STATUSES: tuple[tuple[type[AthenaError], int], ...] = (
    (InvalidInput, 422),
    (NotFound, 404),
    (RecallTimeout, 504),
    (StoreLocked, 503),
    (WorkerPoolUnavailable, 503),
)
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the API answers with as is: status, code, message and extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


def _plain(value: Any) -> Any:
    """JSON fallback for what ``json`` cannot encode (numpy scalars, tuples, sets)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class ApiJSON(JSONResponse):
    """JSON that never fails to encode: numpy scalars become numbers, NaN becomes null."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, default=_plain)
        except ValueError:
            plain = json.loads(json.dumps(content, default=_plain))
            text = json.dumps(_finite(plain), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> ApiJSON:
    body = {"error": {"code": code, "message": message}}
    return ApiJSON(body, status_code=status, headers=dict(headers or {}))


def status_for(exc: AthenaError) -> int:
    """The HTTP status of an Athena error.

    >>> status_for(NotFound("x")), status_for(AthenaError("x"))
    (404, 500)
    """
    for kind, status in STATUSES:
        if isinstance(exc, kind):
            return status
    return 500


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _athena(request: Request, exc: Exception) -> ApiJSON:
    assert isinstance(exc, AthenaError)
    status = status_for(exc)
    if status == 500:
        logger.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc)
    headers = {"Retry-After": "1"} if status == 503 else None
    return error_response(status, exc.code, _one_line(str(exc)) or exc.code, headers)


async def _api(request: Request, exc: Exception) -> ApiJSON:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _validation(request: Request, exc: Exception) -> ApiJSON:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    return error_response(422, InvalidInput.code, _validation_message(exc))


async def _http(request: Request, exc: Exception) -> ApiJSON:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 400 and "parsing the body" in message:
        code, message = "malformed_json", "the request body is not valid JSON"
    return error_response(exc.status_code, code, message, exc.headers)


async def _crash(request: Request, exc: Exception) -> ApiJSON:
    if isinstance(exc, RecursionError):  # absurdly nested JSON
        return error_response(400, "malformed_json", "the request body is nested too deeply")
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through :func:`error_response`."""
    app.add_exception_handler(AthenaError, _athena)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _crash)
