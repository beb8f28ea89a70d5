"""Errors at the HTTP edge: the one table from the core's error codes to HTTP statuses and headers, and the
exception handlers that answer every error as `{"detail": ..., "code": ...}`."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope, Send

from app.api import request_id as request_ids
from app.api.policy import UNMATCHED, is_v2, rule_of
from app.core.errors import CoreError
from app.core.prediction import ItemError

logger = logging.getLogger("learnserve")

# code -> (status, headers). Every code a client can receive is here; a code missing from the table is a bug.
ERRORS: dict[str, tuple[int, dict[str, str] | None]] = {
    "bad_request": (400, None),
    "client_disconnected": (400, None),
    "model_required": (400, None),
    "invalid_inference_request": (400, None),
    "unauthorized": (401, {"WWW-Authenticate": "Bearer"}),
    "model_not_found": (404, None),
    "unknown_request": (404, None),
    "capture_off": (409, None),
    "feedback_unsupported": (409, None),
    "unknown_label": (422, None),
    "capture_unavailable": (503, {"Retry-After": "60"}),
    "file_too_large": (413, None),
    "request_too_large": (413, None),
    "over_memory_budget": (413, None),
    "request_timeout": (408, None),
    "too_many_pixels": (413, None),
    "too_many_files": (413, None),
    "unsupported_media_type": (415, None),
    "explain_unsupported": (409, None),
    "unknown_target": (400, None),
    "empty_file": (422, None),
    "corrupt_image": (422, None),
    "unreadable": (422, None),
    "validation_error": (422, None),
    "top_k_not_applicable": (422, None),
    "overloaded": (503, {"Retry-After": "1"}),
    "not_ready": (503, {"Retry-After": "1"}),
}

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 400: "bad_request"}


def status_of(error: CoreError) -> tuple[int, dict[str, str] | None]:
    return ERRORS[error.code]


def error_json(
    scope: Scope, status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(scope, code, detail), status_code=status, headers=headers)


def item_error(
    scope: Scope, error: ItemError, headers: dict[str, str], detail: str | None = None
) -> JSONResponse:
    """An item's error as the whole answer (/predict, v2 inference): status and headers from the table, in the
    route's error shape, with the route's own headers (the model that answered)."""
    status, extra = ERRORS[error.code]
    return error_json(scope, status, error.code, detail or error.detail, {**headers, **(extra or {})})


async def core_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CoreError)
    status, headers = status_of(exc)
    return error_json(request.scope, status, exc.code, exc.detail, headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if is_v2(request.scope):  # the protocol answers a malformed request with 400
        return error_json(request.scope, 400, "invalid_inference_request", describe_invalid(exc))
    return error_json(request.scope, 422, "validation_error", describe_validation(exc))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"There is no {request.url.path}; the API is listed at /docs."
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}; the API is listed at /docs."
    return error_json(request.scope, exc.status_code, code, detail, dict(exc.headers or {}))


async def client_disconnect(request: Request, exc: Exception) -> JSONResponse:
    """The client went away while its body was being read: nobody is listening, nothing to log."""
    return error_json(request.scope, 400, "client_disconnected", "The client closed the connection.")


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A server fault (a bug, MemoryError): 500, logged with the request ID, counted in
    learnserve_server_errors_total by route."""
    # Runs outside the middleware (Starlette's outermost layer), so bring the request ID back for this line.
    request_id = request_ids.of(request)
    token = request_ids.REQUEST_ID.set(request_id)
    try:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
    finally:
        request_ids.REQUEST_ID.reset(token)
    metrics = getattr(request.state, "metrics", None)  # None before the lifespan has run
    if metrics is not None:
        rule = rule_of(request.scope)
        metrics.server_errors.labels(rule.name if rule else UNMATCHED).inc()
    headers = {request_ids.HEADER: request_id} if request_id else None
    return error_json(
        request.scope,
        500,
        "internal_error",
        "The server failed to handle this request; it has been logged.",
        headers,
    )


def describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "request"
        if err.get("type") == "missing" and err.get("loc", ("",))[0] == "body":
            parts.append(
                f"missing form field '{where}': send the image as multipart/form-data in field '{where}'"
            )
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "The request is invalid."


def error_body(scope: Scope, code: str, detail: str) -> dict[str, str]:
    """The error shape the request's route declares: the Open Inference Protocol's `{"error"}` or ours."""
    return {"error": detail} if is_v2(scope) else {"detail": detail, "code": code}


async def send_error(
    send: Send, scope: Scope, status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> None:
    """Answer from ASGI middleware, before the app has run (body limits, keys): same shapes as the handlers."""
    body = json.dumps(error_body(scope, code, detail), separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def describe_invalid(exc: RequestValidationError) -> str:
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"The request body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})."
    return describe_validation(exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CoreError, core_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_disconnect)
    app.add_exception_handler(Exception, unexpected_error)
