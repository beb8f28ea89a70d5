"""Bytes in, a safe RGB PIL image out: the format is decided by content, the size is checked before decoding.

Unusual but valid images are normalised the way a person expects them to look: EXIF rotation applied,
transparency composited on white, 16-bit scaled to 8-bit, CMYK and grayscale converted, first frame of an animation.
A plain RGB image comes out pixel-identical to fastai's `PILImage.create(bytes)`, which is what training used.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import CorruptImage, EmptyFile, TooManyPixels, UnsupportedImage

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
        raise CorruptImage(f"The image header is corrupt ({type(e).__name__}).") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}."
        )
    try:
        image.load()  # first frame only, for animations
        return to_rgb(ImageOps.exif_transpose(image) or image)
    except Exception as e:  # truncated data, bad chunks, broken EXIF: a client's file, never a server error
        raise CorruptImage(f"The image data is truncated or corrupt ({type(e).__name__}: {e}).") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        image = _to_8bit_gray(image)
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale: scale the full range to 0..255 (PIL's own convert would clip)."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if pixels.max(initial=0) <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 1.0
    return Image.fromarray(np.clip(pixels * scale + 0.5, 0, 255).astype(np.uint8))
