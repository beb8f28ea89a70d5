"""A segmentation's answer over HTTP: JSON by default (the share of each code and the mask as a base64 PNG), the mask
PNG itself for `Accept: image/png`, and on request (`overlay=true`) a colour overlay for people: the upload with
each pixel's code colour blended in and a legend of the codes under it. JSON always carries `legend` (code -> the
overlay's colour), so that a client drawing the mask itself (the demo page) uses the same colours."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response

from app.core.errors import CoreError
from app.core.imaging import decode_image
from app.core.masks import OVERLAY_BYTES_PER_PIXEL, legend, overlay_png
from app.core.prediction import Mask

Overlay = Annotated[
    bool,
    Query(
        description="segmentation models only: also give the upload with the mask's colours blended in and a "
        "legend of the codes (in JSON: `overlay`, a base64 PNG; with `Accept: image/png`: that "
        "PNG itself instead of the mask)"
    ),
]
PNG = "image/png"
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            PNG: {
                "schema": {"type": "string", "format": "binary"},
                "description": "segmentation models, with `Accept: image/png`: the mask as an 8-bit greyscale PNG "
                "the size of the upload (pixel value = code index); with `overlay=true`, the overlay",
            }
        }
    }
}


class OverlayUnsupported(CoreError):
    code = "bad_request"


def wants_png(request: Request) -> bool:
    """`Accept: image/png` (without application/json beside it): the PNG itself rather than JSON."""
    accept = request.headers.get("accept", "")
    return PNG in accept and "application/json" not in accept


def mask_answer(kind: str, mask: Mask, codes: Sequence[str]) -> dict[str, Any]:
    """SegmentationAnswer's shape (app/api/schemas.py)."""
    width, height = mask.size
    shares = dict(zip(codes, mask.shares(len(codes)), strict=True))
    return {"kind": kind, "codes": list(codes), "width": width, "height": height, "shares": shares,
            "legend": legend(list(codes)), "mask": base64.b64encode(mask.png).decode("ascii")}  # fmt: skip


async def overlay_of(request: Request, data: bytes, mask: Mask, codes: Sequence[str]) -> bytes:
    """The overlay PNG: the upload decoded again (in a thread), under a memory charge of its size."""
    width, height = mask.size
    budget = request.state.repository.budget
    max_pixels = request.state.settings.max_pixels
    async with budget.hold(OVERLAY_BYTES_PER_PIXEL * width * height, "this image's overlay"):
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: overlay_png(decode_image(data, max_pixels), mask.ids, list(codes))
        )


async def segmentation_response(
    request: Request, kind: str, mask: Mask, codes: Sequence[str], data: bytes, overlay: bool,
    headers: dict[str, str],
) -> Response:  # fmt: skip
    """The answer to /predict for one mask: the PNG asked for, or the JSON (with the overlay when asked)."""
    drawn = await overlay_of(request, data, mask, codes) if overlay else None
    if wants_png(request):
        return Response(drawn or mask.png, media_type=PNG, headers=headers)
    body = mask_answer(kind, mask, codes)
    if drawn is not None:
        body["overlay"] = base64.b64encode(drawn).decode("ascii")
    return JSONResponse(body, headers=headers)
