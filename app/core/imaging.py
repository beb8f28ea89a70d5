"""Bytes in, a safe RGB PIL image out: the format is decided by content, the size is checked before decoding.

Unusual but valid images are normalised the way a person expects them to look: EXIF rotation applied,
transparency composited on white, 16-bit scaled to 8-bit, CMYK and grayscale converted, first frame of an animation.
A plain RGB image comes out pixel-identical to fastai's `PILImage.create(bytes)`, which is what training used.
"""

from __future__ import annotations

import io
import os
import traceback

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import CorruptImage, EmptyFile, TooManyPixels, UnsupportedImage
from app.core.metadata import drop_metadata  # also lowers Pillow's PNG text limits

Image.init()  # register every plugin now, so `formats=` below can name WEBP and MPO
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # JPEG includes MPO (multi-picture, phone cameras)
SUPPORTED = "JPEG, PNG, WebP, GIF or BMP"
WHITE = (255, 255, 255, 255)
_TRANSPARENT_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def sniff_unsupported(data: bytes) -> str | None:
    """Name well-known formats we refuse, so the answer can say what was sent."""
    head = data[:512]
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return (
            "AVIF"
            if brand in (b"avif", b"avis")
            else "HEIC/HEIF"
            if brand[:3] in (b"hei", b"hev", b"mif")
            else None
        )
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<?xml", b"<svg")) or b"<svg" in stripped:
        return "SVG"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ICO"
    return None


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes in, a safe RGB image out (`open_image`, then `load_rgb`)."""
    return load_rgb(open_image(data, max_pixels))


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read and check the header only: format by content, size against `max_pixels`. No pixel is decoded yet.
    Text, XMP and ICC profiles are dropped (app/core/metadata.py): the image may wait in a queue."""
    if not data:
        raise EmptyFile("The uploaded file is empty.")
    if kind := sniff_unsupported(data):
        raise UnsupportedImage(f"{kind} files are not supported; send a {SUPPORTED} image.")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImage(f"The file is not a {SUPPORTED} image.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(f"The image declares more pixels than the limit of {max_pixels:,}.") from None
    except Exception as e:  # PIL's header parsers raise many types on hostile input; all mean "corrupt"
        if not raised_by_pillow(e):
            raise  # a server fault (MemoryError, a bug of ours): 500, logged, never blamed on the client
        raise CorruptImage(f"The image header is corrupt ({type(e).__name__}).") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}."
        )
    drop_metadata(image)
    return image


def load_rgb(image: Image.Image) -> Image.Image:
    """Decode an opened image (first frame only, for animations) and normalise it to RGB."""
    try:
        image.load()
        if _orientation(image) not in (0, 1):  # rotated by EXIF: a turned copy (exif_transpose copies anyway)
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Exception as e:  # truncated data, bad chunks, broken EXIF: a client's file, never a server error
        if not raised_by_pillow(e):
            raise  # a server fault (MemoryError, a bug of ours): 500, logged, never blamed on the client
        raise CorruptImage(f"The image data is truncated or corrupt ({type(e).__name__}: {e}).") from None


_PILLOW_DIR = os.path.dirname(PIL.__file__) + os.sep
_APP_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def raised_by_pillow(error: Exception) -> bool:
    """Whether a decoding error is the file's fault: Pillow raised it while reading the data (its parsers and
    decoders raise OSError, ValueError, SyntaxError, struct.error, IndexError... on hostile bytes). A MemoryError is
    the server's, and so is an error raised in our own code (the innermost frame of Pillow's or ours decides:
    standard-library frames below Pillow's are Pillow's calls)."""
    if isinstance(error, MemoryError):
        return False
    for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
        filename = os.path.abspath(frame.f_code.co_filename)
        if filename.startswith(_PILLOW_DIR):
            return True
        if filename.startswith(_APP_DIR):
            return False
    return False


# Bytes per pixel of PIL's own buffer for each mode (multi-band modes use 4 bytes per pixel).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def working_bytes(image: Image.Image) -> int:
    """An upper bound of the memory `load_rgb` holds at once for this opened image, from its header alone: the
    decoded buffer, a rotated copy when EXIF says so, the conversions to RGB and the compositing strips
    (tests/test_imaging.py checks it against the measured peak for each kind of image)."""
    width, height = image.size
    source = _MODE_BYTES.get(image.mode, 4)
    # An EXIF block read with the header (JPEG, WebP, most PNGs) may rotate; parsing one costs, so only then.
    rotated = 2 if "exif" in image.info and _orientation(image) not in (0, 1) else 1
    strips = 0
    if image.mode in _HIGH_DEPTH_MODES:
        extra = 1 + 4  # 8-bit gray, then RGB
        strips = width * COMPOSITE_ROWS * 8 * 2  # float64 rows and their rounding
    elif image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        extra = (0 if image.mode == "RGBA" else 4) + 4  # RGBA, then the RGB result
        strips = width * COMPOSITE_ROWS * 4 * 4  # crop, white, composite, RGB strip
    else:
        extra = 0 if image.mode == "RGB" else 4
    return width * height * (source * rotated + extra) + strips


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # an unreadable EXIF block is load_rgb's to report
        return 1


COMPOSITE_ROWS = 256  # transparency is composited in strips: no full-size RGBA copies


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        image = _to_8bit_gray(image)
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        out = Image.new("RGB", rgba.size)
        width, height = rgba.size
        for top in range(0, height, COMPOSITE_ROWS):
            strip = rgba.crop((0, top, width, min(height, top + COMPOSITE_ROWS)))
            white = Image.new("RGBA", strip.size, WHITE)
            out.paste(Image.alpha_composite(white, strip).convert("RGB"), (0, top))
        return out
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale: scale the full range to 0..255 (PIL's own convert would clip), in strips of
    rows so that no full-size float copy is made."""
    pixels = np.asarray(image)
    if image.mode == "F":
        scale = 255.0 if pixels.max(initial=0) <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 1.0
    out = np.empty(pixels.shape, dtype=np.uint8)
    for top in range(0, pixels.shape[0], COMPOSITE_ROWS):
        rows = pixels[top : top + COMPOSITE_ROWS].astype(np.float64)
        out[top : top + COMPOSITE_ROWS] = np.clip(rows * scale + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out)
