"""The learner's validation pipeline with PIL and numpy only, from the manifest's `preprocessing` section: what
the ONNX backend runs where fastai and torch are not installed.

Item (per image, off the model thread): fastai's `Resize` at validation (split_idx=1), step for step: for `crop`
and `pad` a centred crop/pad box from the same integer arithmetic, a crop, a pad (numpy's pad, as torchvision's
`pad` does for PIL images), then PIL's resize with the same resampling; then HWC -> CHW (`ToTensor`).
Batch: divide by `scale` (`IntToFloatTensor`) and normalise (`Normalize`), in float32 as torch does.
tests/test_onnx_parity.py proves the answers equal `learn.predict`'s on 200+ images for every resize method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from training.manifest import Preprocessing

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
PAD_MODES = {"zeros": "constant", "border": "edge", "reflection": "reflect"}  # fastai -> numpy
RESIZE_METHODS = ("squish", "crop", "pad")

Box = tuple[int, int]


def crop_pad_box(method: str, size: int, w: int, h: int) -> Box:
    """The (width, height) Resize crops or pads a w x h image to before resizing it to `size` x `size`: the image
    itself for squish, a centred square of its short side for crop, of its long side for pad."""
    if method == "squish":
        return w, h
    wide = w / size > h / size
    m = w / size if wide == (method == "pad") else h / size
    return int(m * size), int(m * size)


def input_to_image(method: str, size: int, w: int, h: int) -> tuple[float, float, float, float]:
    """(scale_x, scale_y, offset_x, offset_y) that take a point of the model's `size` x `size` input back to the
    w x h image it was resized from: x_image = offset_x + x * scale_x. The inverse of Resize at validation: the
    centred crop or pad box, then the resize (continuous coordinates: 0 is an image's left edge, `size` its right)."""
    box_w, box_h = crop_pad_box(method, size, w, h)
    left, top = int(0.5 * (w - box_w)), int(0.5 * (h - box_h))  # as Preprocessor.resize places the box
    return box_w / size, box_h / size, float(left), float(top)


def resize_working_bytes(method: str, size: int, w: int, h: int) -> int:
    """An upper bound of the memory `Preprocessor.item` holds beside its RGB input of w x h (PIL keeps RGB in 4
    bytes a pixel, numpy in 3): for crop, the cropped square; for pad, the image as an array, the padded array and
    the image made of it (3 + 4 bytes a pixel of the square). A 12000x2 image padded is 12000x12000: 1 GB.
    fastai's own pipeline (used when the twin cannot reproduce it) pads the same way (torchvision's pad)."""
    if method == "squish":
        return 0
    box_w, box_h = crop_pad_box(method, size, w, h)
    if method == "crop":
        return 4 * box_w * box_h
    return 3 * w * h + 7 * box_w * box_h


class Preprocessor:
    def __init__(self, spec: Preprocessing) -> None:
        if spec.resize_method not in RESIZE_METHODS:
            raise ValueError(
                f"resize method {spec.resize_method!r} is not one of {', '.join(RESIZE_METHODS)}"
            )
        if spec.channels != "RGB" or spec.layout != "NCHW":
            raise ValueError(f"input {spec.channels}/{spec.layout} is not supported (RGB/NCHW only)")
        self.size = (spec.size, spec.size)  # (width, height)
        self.method = spec.resize_method
        self.pad_mode = PAD_MODES[spec.pad_mode]
        self.resample = RESAMPLE[spec.resample]
        self.scale = np.float32(spec.scale)
        norm = spec.normalize
        self.mean = np.asarray(norm.mean, np.float32).reshape(1, -1, 1, 1) if norm else None
        self.std = np.asarray(norm.std, np.float32).reshape(1, -1, 1, 1) if norm else None

    def item(self, image: Image.Image) -> NDArray[np.uint8]:
        """An RGB image -> uint8 [3, size, size], equal to fastai's Resize -> ToTensor at validation."""
        resized = self.resize(image)
        return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))

    def batch(self, items: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Stacked items -> float32 [N, 3, size, size], equal to IntToFloatTensor -> Normalize."""
        x = np.stack(items).astype(np.float32) / self.scale
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x

    def resize(self, image: Image.Image) -> Image.Image:
        """fastai.vision.augment.Resize.encodes with pcts (0.5, 0.5)."""
        w, h = image.size
        size = crop_pad_box(self.method, self.size[0], w, h)
        top_left = (int(0.5 * (w - size[0])), int(0.5 * (h - size[1])))
        return self._crop_pad(image, size, top_left, (w, h))

    def _crop_pad(self, x: Image.Image, size: Box, tl: Box, orig: Box) -> Image.Image:
        """fastai's `_do_crop_pad` for PIL images, then the resize."""
        ends = (tl[0] + size[0], tl[1] + size[1])
        if any(t >= 0 for t in tl) or any(e <= o for e, o in zip(ends, orig, strict=True)):
            box = (max(tl[0], 0), max(tl[1], 0), min(ends[0], orig[0]), min(ends[1], orig[1]))
            if box != (0, 0, *orig):  # cropping to the whole image would only copy it
                x = x.crop(box)
        if any(t < 0 for t in tl) or any(e >= o for e, o in zip(ends, orig, strict=True)):
            left, top = max(-tl[0], 0), max(-tl[1], 0)
            right, bottom = max(size[0] - orig[0] + tl[0], 0), max(size[1] - orig[1] + tl[1], 0)
            if left or top or right or bottom:
                pixels = np.pad(np.asarray(x), ((top, bottom), (left, right), (0, 0)), mode=self.pad_mode)  # type: ignore[call-overload]
                x = Image.fromarray(pixels)
        return x.resize(self.size, self.resample)
