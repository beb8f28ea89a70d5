"""Segmentation masks: from the model's input back to the uploaded image, as PNG, and as a colour overlay.

The model's mask covers its input, which is the upload resized the learner's way (app/core/preprocess.py). Every
pixel of the upload takes the code of the input pixel its centre falls in, through the inverse of that resize
(`input_to_image`): nearest neighbour, so every value is a code. Squish stretches the mask back over the image; pad
cuts the padding away; crop places the mask on the centred square the model saw, and the strips outside it (never
seen by the model) take the code of the nearest pixel it did see.

Masks travel as PNG: lossless, a few hundred bytes for a typical mask (runs of one value deflate well), and every
language decodes it. 8-bit greyscale, pixel value = code index (16-bit past 256 codes).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.core.prediction import Ids
from app.core.preprocess import input_to_image

# Bytes a segmentation answer holds per pixel of the upload, charged to the memory budget from before the image is
# decoded until the answer is made: the mask (1, or 2 past 256 codes), its PNG (at most about 1 when nothing
# deflates), the PNG in base64 (1.34) and the JSON answer holding it (1.34), with room for the row indices.
ANSWER_BYTES_PER_PIXEL = 6
# An overlay (`overlay_png`): the upload decoded (RGB and a possible RGBA copy, 7), the colour of each pixel (3), the
# blend in uint16 (6 + 6), the result (3), the canvas (4), its PNG (about 3) and base64 (4).
OVERLAY_BYTES_PER_PIXEL = 40
LEGEND_ROW = 14  # pixels per code in the legend under an overlay

# Distinct colours for codes 0, 1, 2, ... (Glasbey-like; repeated past the end). Code 0 is usually the background.
PALETTE = np.array(
    [
        (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
        (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
        (0, 0, 128), (128, 128, 128), (255, 255, 255),
    ],
    np.uint8,
)  # fmt: skip


def to_image(ids: Ids, method: str, size: int, input_size: int, width: int, height: int) -> Ids:
    """The model's input_size x input_size mask over the width x height upload it was resized from (`method` to
    `size`; a presized learner resizes `size` to `input_size` once more in its batch transforms)."""
    sx, sy, ox, oy = input_to_image(method, size, width, height)
    scale = size / input_size
    cols = np.floor((np.arange(width) + 0.5 - ox) / (sx * scale)).astype(np.int64).clip(0, input_size - 1)
    rows = np.floor((np.arange(height) + 0.5 - oy) / (sy * scale)).astype(np.int64).clip(0, input_size - 1)
    mapped: Ids = ids[rows[:, None], cols[None, :]]
    return mapped


def png_of(ids: Ids) -> bytes:
    """The mask as a greyscale PNG: 8-bit (pixel value = code), 16-bit past 256 codes."""
    out = io.BytesIO()
    image = Image.fromarray(ids if ids.dtype == np.uint8 else ids.astype("<u2"))  # L, or I;16
    image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def ids_of(png: bytes) -> Ids:
    """The inverse of png_of."""
    with Image.open(io.BytesIO(png)) as image:
        ids = np.asarray(image)
    return ids.astype(np.uint8) if ids.dtype == np.uint8 else ids.astype(np.uint16)


def colour_of(code: int) -> tuple[int, int, int]:
    r, g, b = PALETTE[code % len(PALETTE)].tolist()
    return r, g, b


def legend(codes: list[str]) -> dict[str, str]:
    """code -> its colour in the overlay, as #rrggbb."""
    return {code: "#{:02x}{:02x}{:02x}".format(*colour_of(i)) for i, code in enumerate(codes)}


def overlay_png(image: Image.Image, ids: Ids, codes: list[str]) -> bytes:
    """The upload (RGB) with each pixel's code colour blended in half and half, and under it a legend: one row per
    code, its colour and its name. The mask must be the upload's size."""
    pixels = np.asarray(image.convert("RGB"), np.uint16)
    blended = ((pixels + PALETTE[ids % len(PALETTE)] + 1) // 2).astype(np.uint8)
    width, height = image.size
    canvas = Image.new("RGB", (max(width, 120), height + LEGEND_ROW * len(codes) + 4), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, code in enumerate(codes):
        top = height + 2 + LEGEND_ROW * i
        draw.rectangle((2, top + 1, 12, top + LEGEND_ROW - 3), fill=colour_of(i), outline=(90, 90, 90))
        draw.text((16, top), code, fill=(0, 0, 0), font=font)
    out = io.BytesIO()
    canvas.save(out, "PNG")
    return out.getvalue()
