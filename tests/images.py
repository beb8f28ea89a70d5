"""Real image files of many formats and modes, made in memory for the tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.conftest import COLORS, make_image


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def sample(label: str = "red", seed: int = 0, size: int = 32) -> Image.Image:
    return make_image(COLORS[label], seed=seed + 1000, size=size)


def rgba_with_transparent_corner(label: str = "blue") -> Image.Image:
    img = sample(label).convert("RGBA")
    pixels = np.array(img)
    pixels[:8, :8, 3] = 0
    return Image.fromarray(pixels)


def exif_rotated_jpeg(label: str = "green") -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    img = sample(label, size=40).crop((0, 0, 40, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def gray16_png(label: str = "red") -> bytes:
    gray = np.asarray(sample(label).convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(gray), "PNG")


def animated_gif(label: str = "green") -> bytes:
    frames = [sample(label).convert("P"), sample("blue").convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency(label: str = "red") -> bytes:
    img = sample(label).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(img, "PNG", transparency=0)


def many_formats() -> dict[str, bytes]:
    """Name -> file bytes: every format and unusual mode the service promises to accept."""
    files: dict[str, bytes] = {}
    for i, label in enumerate(COLORS):
        img = sample(label, seed=i)
        files[f"{label}.png"] = encode(img, "PNG")
        files[f"{label}.jpg"] = encode(img, "JPEG", quality=90)
        files[f"{label}.webp"] = encode(img, "WEBP", lossless=True)
        files[f"{label}.bmp"] = encode(img, "BMP")
        files[f"{label}.gif"] = encode(img.convert("P"), "GIF")
        files[f"{label}-gray.png"] = encode(img.convert("L"), "PNG")
        files[f"{label}-cmyk.jpg"] = encode(img.convert("CMYK"), "JPEG", quality=95)
        files[f"{label}-rgba.png"] = encode(rgba_with_transparent_corner(label), "PNG")
        files[f"{label}-large.jpg"] = encode(sample(label, seed=i, size=300), "JPEG")
        files[f"{label}-wide.png"] = encode(sample(label, seed=i, size=64).crop((0, 0, 64, 20)), "PNG")
    files["rotated.jpg"] = exif_rotated_jpeg()
    files["gray16.png"] = gray16_png()
    files["animated.gif"] = animated_gif()
    files["palette-transparent.png"] = palette_with_transparency()
    files["bilevel.png"] = encode(sample("blue").convert("1"), "PNG")
    files["tiny.png"] = encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG")
    files["la.png"] = encode(sample("green").convert("LA"), "PNG")
    return files
