"""The core's errors: a stable machine-readable code and a sentence, nothing about HTTP.

The HTTP edge maps each code to a status and headers in one table (app/api/errors.py); the command lines print
the same codes. A `CoreError` is always the client's or the input's problem, never a server fault.
"""

from __future__ import annotations

from typing import ClassVar


class CoreError(Exception):
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EmptyFile(CoreError):
    code = "empty_file"


class UnsupportedImage(CoreError):
    code = "unsupported_media_type"


class CorruptImage(CoreError):
    code = "corrupt_image"


class Unreadable(CoreError):
    """A file on disk that cannot be read (the command lines and the batch scorer)."""

    code = "unreadable"


class FileTooLarge(CoreError):
    code = "file_too_large"

    @classmethod
    def over(cls, limit: int, size: int | None = None, subject: str = "The file") -> FileTooLarge:
        """The one wording for every entry point (uploads, v2 elements, files on disk, batch jobs)."""
        if size is None:  # only the first limit + 1 bytes were read, or only the encoded length is known
            return cls(f"{subject} is larger than the limit of {limit:,} bytes.")
        return cls(f"{subject} is {size:,} bytes; the limit is {limit:,} bytes.")


class TooManyPixels(CoreError):
    code = "too_many_pixels"


class TooManyFiles(CoreError):
    code = "too_many_files"


class Overloaded(CoreError):
    """Too much work is waiting; the same request may succeed shortly."""

    code = "overloaded"


class OverBudget(CoreError):
    """One image or request needs more memory at once than the whole budget: it can never be served as sent."""

    code = "over_memory_budget"


class NotReady(CoreError):
    """Starting up, reloading away, or shutting down."""

    code = "not_ready"


class ModelNotFound(CoreError):
    code = "model_not_found"


class ModelRequired(CoreError):
    """Several models are served and none is the default: the request must name one."""

    code = "model_required"


class ModelLoadError(Exception):
    """A model cannot be served (missing, unsafe, altered, corrupt, from another Python): one clear sentence."""
