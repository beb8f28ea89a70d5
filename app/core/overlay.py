"""A Grad-CAM map drawn over the uploaded image, at the upload's own size.

The map covers the model's input, which is the upload resized the learner's way (app/core/preprocess.py): the whole
image squished (squish), a centred square of its short side (crop: the rest was never seen, so it stays uncoloured)
or a centred square of its long side padded out (pad: the padding is outside the image and is cut away). So the map
is stretched over that square and placed where the square sits on the image; then colour-mapped and blended.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from app.core.preprocess import crop_pad_box

# A "jet"-like colour map: dark blue (0) -> cyan -> yellow -> red (1), interpolated between these stops.
STOPS = np.array([0.0, 0.35, 0.65, 1.0], np.float32)
COLOURS = np.array([[0, 0, 140], [0, 200, 230], [250, 230, 0], [220, 0, 0]], np.float32)
ALPHA = 0.5  # the map's weight in the blend where it is 1 (it fades with the map, so the image shows through)


def overlay_bytes(width: int, height: int) -> int:
    """An upper bound of the memory `overlay_png` holds for a width x height image: the full-size map and its
    colours in float32, the blend and the RGB copies (about 40 bytes a pixel)."""
    return 40 * width * height


def upsample(
    cam: NDArray[np.float32], method: str, size: int, width: int, height: int
) -> NDArray[np.float32]:
    """The map over a width x height image, undoing the learner's Resize (`method`, to `size` x `size`)."""
    box_w, box_h = crop_pad_box(method, size, width, height)
    left, top = int(0.5 * (width - box_w)), int(0.5 * (height - box_h))
    stretched = Image.fromarray(cam.astype(np.float32), mode="F").resize(
        (box_w, box_h), Image.Resampling.BILINEAR
    )
    square = np.asarray(stretched, np.float32)
    full = np.zeros((height, width), np.float32)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + box_w, width), min(top + box_h, height)
    full[y0:y1, x0:x1] = square[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.clip(full, 0.0, 1.0)


def colour(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """[H, W] in [0, 1] -> [H, W, 3] RGB in [0, 255]."""
    channels = [np.interp(values, STOPS, COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def overlay_png(image: Image.Image, cam: NDArray[np.float32], method: str, size: int) -> bytes:
    """The upload (RGB) with the map blended over it, as PNG bytes."""
    width, height = image.size
    full = upsample(cam, method, size, width, height)
    weight = (ALPHA * full)[..., None]
    pixels = np.asarray(image.convert("RGB"), np.float32)
    blended = (1 - weight) * pixels + weight * colour(full)
    out = io.BytesIO()
    Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()
