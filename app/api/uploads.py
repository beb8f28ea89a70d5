"""Reading what a client uploaded, straight from the request body (bounded and charged to the memory budget by
BodyGuard before it gets here): a multipart form (python-multipart's parser over the whole body, no temporary
files) or the raw image bytes with an `image/*` Content-Type. Client filenames are made safe to echo."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.errors import CoreError, FileTooLarge, UnsupportedImage
from app.core.prediction import ItemError

RAW_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "application/octet-stream")
RAW_NEEDS = "a raw image body needs `Content-Type: image/*` (e.g. -H 'Content-Type: image/png')"
MAX_PARTS = 1000  # a form is refused past this many parts, whatever their names


class MalformedForm(CoreError):
    code = "bad_request"


class SeveralFiles(CoreError):
    """Several files sent to a route that classifies one."""

    code = "bad_request"


class MissingField(CoreError):
    code = "validation_error"


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str  # made safe to echo
    data: bytes | ItemError  # the file, or why it cannot be read (too large)


def read_uploads(
    content_type: str, body: bytes, field: str, max_bytes: int, raw: bool = True
) -> list[Upload]:
    """The files a request carries in `field` (multipart), or its body as one file (image/*, when `raw`)."""
    media, options = parse_options_header(content_type.encode("latin-1"))
    if media == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise MalformedForm("The multipart/form-data request has no boundary in its Content-Type.")
        form = parse_multipart(body, boundary)
        parts = [(filename, data) for name, filename, data in form if name == field]
        if any(filename is None for filename, _ in parts):
            raise MissingField(
                f"form field '{field}' must carry files (parts with a filename), not text: "
                f"e.g. curl -F {field}=@photo.jpg"
            )
        files = [(filename or "", data) for filename, data in parts]
        if not files:
            arrived = sorted({name for name, _, _ in form})
            carried = (
                f"the form carries {', '.join(repr(n) for n in arrived)}"
                if arrived
                else "the form carries no fields"
            )
            raise MissingField(f"missing form field '{field}' ({carried}): {_how(field, raw)}")
    elif raw and media.decode("latin-1") in RAW_TYPES:
        files = [("upload", body)]
    elif not body:
        raise MissingField(f"missing form field '{field}' (the request has no body): {_how(field, raw)}")
    elif raw and media == b"application/x-www-form-urlencoded":  # curl --data-binary's default type
        raise MissingField(
            f"missing form field '{field}': the body came as application/x-www-form-urlencoded (curl's default for "
            f"--data-binary); {RAW_NEEDS}, or {_how(field, raw=False)}"
        )
    elif raw and not media:
        raise UnsupportedImage(f"The request has no Content-Type: {RAW_NEEDS}, or {_how(field, raw=False)}.")
    elif media == b"application/x-www-form-urlencoded":  # a form without files
        raise MissingField(f"missing form field '{field}': {_how(field, raw)}")
    else:
        shown = media.decode("latin-1") or "none"
        raw_hint = (
            ", or the image bytes with Content-Type image/jpeg, image/png, image/webp, image/gif or image/bmp"
        )
        raise UnsupportedImage(
            f"Content-Type {shown} is not accepted: send multipart/form-data with the images in field "
            f"'{field}'{raw_hint if raw else ''}."
        )
    return [Upload(safe_filename(name), _bounded(data, max_bytes)) for name, data in files]


def _how(field: str, raw: bool) -> str:
    how = f"send the image as multipart/form-data in field '{field}' (curl -F {field}=@photo.jpg)"
    if raw:
        how += ", or the image bytes as the body with `Content-Type: image/*` (curl --data-binary @photo.jpg " \
               "-H 'Content-Type: image/jpeg')"  # fmt: skip
    return how


def _bounded(data: bytes, max_bytes: int) -> bytes | ItemError:
    if len(data) > max_bytes:
        return ItemError.of(FileTooLarge.over(max_bytes, len(data)))
    return data


def parse_multipart(body: bytes, boundary: bytes) -> list[tuple[str, str | None, bytes]]:
    """(field name, filename or None for a text field, data) of every part, in order. Raises MalformedForm on a
    broken form."""
    parts: list[tuple[str, str | None, bytes]] = []
    headers: list[list[bytes]] = []
    chunks: list[bytes] = []

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise MalformedForm(f"The form has more than {MAX_PARTS} parts.")
        headers.clear()
        chunks.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        headers.append([data[start:end].lower(), b""])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        headers[-1][1] += data[start:end]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunks.append(data[start:end])

    def on_part_end() -> None:
        disposition = next((v for k, v in headers if k == b"content-disposition"), b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_name = options.get(b"filename")
        filename = raw_name.decode("utf-8", "replace") if raw_name is not None else None
        parts.append((name, filename, chunks[0] if len(chunks) == 1 else b"".join(chunks)))

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_part_data": on_part_data, "on_part_end": on_part_end}  # fmt: skip
    try:  # FormParserError: the base of every error python-multipart raises, a refused boundary included
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise MalformedForm(f"The multipart/form-data body is malformed ({e}).") from None
    return parts


_UNSAFE = re.compile(r"[^\w.\- ()\[\]+,@=]")


def safe_filename(name: str | None, fallback: str = "upload") -> str:
    """A client's filename made safe to echo and log: basename only, printable, no path, at most 100 chars."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = unicodedata.normalize("NFKC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = _UNSAFE.sub("_", base).strip(" .")[:100]
    return base or fallback
