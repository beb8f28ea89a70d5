"""Domain errors, each with its HTTP status and a stable machine-readable code; one JSON shape for all of them."""

from __future__ import annotations

from typing import ClassVar


class ApiError(Exception):
    """A client-facing error: `{"detail": <sentence>, "code": <stable code>}` with `status`."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str] | None:
        return None


class EmptyFile(ApiError):
    status, code = 422, "empty_file"


class UnsupportedImage(ApiError):
    status, code = 415, "unsupported_media_type"


class CorruptImage(ApiError):
    status, code = 422, "corrupt_image"


class FileTooLarge(ApiError):
    status, code = 413, "file_too_large"


class TooManyPixels(ApiError):
    status, code = 413, "too_many_pixels"


class TooManyFiles(ApiError):
    status, code = 413, "too_many_files"


class Overloaded(ApiError):
    status, code = 503, "overloaded"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotReady(ApiError):
    status, code = 503, "not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelLoadError(Exception):
    """The model cannot be served; startup stops with this one-line message."""
