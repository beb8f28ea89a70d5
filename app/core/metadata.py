"""Image metadata: what reading a header may allocate, and dropping it before an image waits in a queue.

Reading a header costs about the file's own size, except in PNG, whose text (zTXt, iTXt) and ICC profile
(iCCP) chunks are zlib streams that Pillow inflates while it opens the file (up to ~1000x: a 1 KB chunk can hold
1 MB of text). A classifier uses none of it: neither fastai's `PILImage.create` nor our `to_rgb` reads text or
applies ICC profiles; only EXIF orientation and transparency matter. So Pillow's limits are lowered here from
1 MiB per chunk and 64 MiB per image to:

- MAX_TEXT_CHUNK = 256 KiB per inflated chunk: four times the largest ICC profile in common use (the sRGB v4
  preference profile, 60,960 bytes) and ample for an XMP packet (tens of KB). A larger chunk makes the file
  unreadable (422 corrupt_image), as Pillow's own limit does;
- MAX_TEXT_MEMORY = 1 MiB of text per image, all chunks together.

`header_bytes` bounds, from the chunk lengths alone, what opening and decoding a PNG may inflate, so the budget
can charge it before Pillow allocates it; `drop_metadata` frees the text once the header is read.
"""

from __future__ import annotations

import struct

from PIL import Image, PngImagePlugin

PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INFLATED = (b"zTXt", b"iTXt", b"iCCP")  # zlib-compressed: inflated while the header is read
DEFLATE_RATIO = 1032  # deflate's largest expansion: 258 bytes out of a 2-bit code, ~1032 to 1
# EXIF orientation and transparency are needed to decode; ImageMagick writes EXIF as this text chunk.
MAX_CHUNKS_WALKED = 4096  # a 10 MB PNG has a few hundred (IDAT chunks are 8 to 64 KB)
KEEP = frozenset({"transparency", "exif", "Raw profile type exif"})


def header_bytes(data: bytes) -> int:
    """An upper bound of the memory Pillow allocates for a PNG's text and ICC chunks (0 for other formats and
    for PNGs without them): each chunk's inflated size (as bytes, then as a str), within Pillow's limits."""
    if not data.startswith(PNG_SIGNATURE) or not any(kind in data for kind in (*INFLATED, b"tEXt")):
        return 0
    chunk = PngImagePlugin.MAX_TEXT_CHUNK
    worst = PngImagePlugin.MAX_TEXT_MEMORY + 3 * chunk
    kept = largest = 0
    pos = len(PNG_SIGNATURE)
    for _ in range(MAX_CHUNKS_WALKED):
        if pos + 8 > len(data):
            break
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in INFLATED:
            inflated = min(chunk, length * DEFLATE_RATIO)
            kept, largest = kept + inflated, max(largest, inflated)
        elif kind == b"tEXt":
            kept += min(length, len(data))  # decoded to a str beside the file's bytes
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:  # a file of many tiny chunks: assume the worst rather than walk them all on the event loop
        return worst
    # Kept: each chunk's text as a str (Pillow stops at MAX_TEXT_MEMORY in all) and one ICC profile; while a chunk
    # is read, its inflated bytes and zlib's growing buffer come beside them.
    return min(kept + 2 * largest, worst)


def drop_metadata(image: Image.Image) -> None:
    """Free an opened image's text, XMP and ICC profile (kept: what decoding needs, see KEEP). Text chunks placed
    after the pixels are read only while decoding, and are charged with it (`header_bytes`)."""
    for key in [k for k in image.info if k not in KEEP]:
        value = image.info[key]
        if isinstance(value, str | bytes) and len(value) > 64:
            del image.info[key]
    png = getattr(image, "png", None)
    if isinstance(png, PngImagePlugin.PngStream):
        for key in [k for k in png.im_text if k not in KEEP]:
            del png.im_text[key]
            png.rewind_state.info.pop(key, None)  # an animated PNG keeps a copy for seeking back
        png.rewind_state.info.pop("icc_profile", None)
        png.rewind_state.info.pop("xmp", None)
