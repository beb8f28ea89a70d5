"""Reading what a client uploaded: bounded reads of multipart files, and client filenames made safe to echo."""

from __future__ import annotations

import re
import unicodedata

from fastapi import UploadFile

from app.core.errors import FileTooLarge
from app.core.prediction import ItemError


async def read_upload(upload: UploadFile, limit: int) -> bytes | ItemError:
    """The file's bytes, or an ItemError when it is over `limit` (the other files of a batch go on)."""
    if upload.size is not None and upload.size > limit:
        return ItemError.of(FileTooLarge(f"The file is {upload.size:,} bytes; the limit is {limit:,} bytes."))
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return ItemError.of(FileTooLarge(f"The file is larger than the limit of {limit:,} bytes."))
    return data


_UNSAFE = re.compile(r"[^\w.\- ()\[\]+,@=]")


def safe_filename(name: str | None, fallback: str = "upload") -> str:
    """A client's filename made safe to echo and log: basename only, printable, no path, at most 100 chars."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = unicodedata.normalize("NFKC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = _UNSAFE.sub("_", base).strip(" .")[:100]
    return base or fallback
