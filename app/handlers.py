"""Exception handlers: every error leaves as `{"detail": ..., "code": ...}` with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app import request_id as request_ids
from app.errors import ApiError

logger = logging.getLogger("learnserve")

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 400: "bad_request"}


def error_json(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_json(exc.status, exc.code, exc.detail, exc.headers())


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_json(422, "validation_error", describe_validation(exc))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"There is no {request.url.path}; the API is listed at /docs."
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}; the API is listed at /docs."
    return error_json(exc.status_code, code, detail, dict(exc.headers or {}))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Runs outside the middleware (Starlette's outermost layer), so bring the request ID back for this line.
    request_id = request_ids.of(request)
    token = request_ids.REQUEST_ID.set(request_id)
    try:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
    finally:
        request_ids.REQUEST_ID.reset(token)
    headers = {request_ids.HEADER: request_id} if request_id else None
    return error_json(
        500, "internal_error", "The server failed to handle this request; it has been logged.", headers
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


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
