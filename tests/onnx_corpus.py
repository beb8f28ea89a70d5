"""A corpus of 200+ real image files for the parity tests: every format and mode the decoder accepts, odd sizes
(1x1, thin, tall, wide), every EXIF orientation, grayscale, 16-bit, transparency, palettes, CMYK."""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from tests.conftest import COLORS, make_image
from tests.images import encode

SIZES = [(1, 1), (3, 7), (17, 33), (32, 32), (33, 17), (41, 300), (300, 41), (64, 48), (97, 97), (128, 96),
         (250, 251), (512, 384)]  # fmt: skip
MODES = ["RGB", "L", "LA", "RGBA", "P", "P-transparent", "1", "CMYK", "I;16"]
FORMATS = {
    "RGB": ["PNG", "JPEG", "WEBP", "GIF", "BMP"],
    "L": ["PNG", "JPEG", "BMP"],
    "LA": ["PNG", "WEBP"],
    "RGBA": ["PNG", "WEBP"],
    "P": ["PNG", "GIF", "BMP"],
    "P-transparent": ["PNG", "GIF"],
    "1": ["PNG", "BMP"],
    "CMYK": ["JPEG"],
    "I;16": ["PNG"],
}


def picture(i: int, size: tuple[int, int]) -> Image.Image:
    label = list(COLORS)[i % len(COLORS)]
    base = make_image(COLORS[label], seed=zlib.crc32(f"corpus-{i}".encode()), size=max(*size, 4))
    return base.resize(size, Image.Resampling.NEAREST) if base.size != size else base


def as_mode(img: Image.Image, mode: str, i: int) -> tuple[Image.Image, dict[str, object]]:
    if mode == "P-transparent":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32), {"transparency": 0}
    if mode in ("LA", "RGBA"):
        alpha = (np.random.default_rng(i).random(img.size[::-1]) * 255).astype(np.uint8)
        out = img.convert(mode)
        out.putalpha(Image.fromarray(alpha))
        return out, {}
    if mode == "I;16":
        return Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257), {}
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), {}
    return img.convert(mode), {}


def corpus() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    i = 0
    for mode in MODES:
        for fmt in FORMATS[mode]:
            for size in SIZES:
                img, extra = as_mode(picture(i, size), mode, i)
                opts = {"quality": 90} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
                files[f"{i:03d}-{mode}-{size[0]}x{size[1]}.{fmt.lower()}"] = encode(img, fmt, **opts, **extra)
                i += 1
    for orientation in range(1, 9):  # every EXIF orientation, on a non-square JPEG
        for size in [(40, 24), (24, 40), (129, 64)]:
            exif = Image.Exif()
            exif[0x0112] = orientation
            img = picture(i, size)
            files[f"{i:03d}-exif{orientation}-{size[0]}x{size[1]}.jpg"] = encode(
                img, "JPEG", exif=exif.tobytes()
            )
            i += 1
    frames = [picture(i, (45, 30)).convert("P"), picture(i + 1, (45, 30)).convert("P")]
    files[f"{i:03d}-animated.gif"] = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    return files
