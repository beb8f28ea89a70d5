"""The Open Inference Protocol ("KServe v2") for this service: its JSON shapes, and tensors to image files and
predictions to tensors. Knows nothing of HTTP; app/api/routes/v2.py serves it.

One input, `image`: BYTES, shape [N], each element an image file encoded as base64 (JSON cannot carry raw
bytes). Outputs: `probabilities` FP32 [N, classes] in the order of /metadata's `classes` (softmax; a multi-label
model's are each label's own sigmoid), `label` BYTES [N] (the most likely class) and, for a multi-label model,
`labels` BOOL [N, classes]: the labels over the threshold (learn.predict's mask; the request's
`parameters.threshold`, else the learner's own). A regression answers `values` FP32 [N, values]; a key point model
`points` FP32 [N, points, 2], (x, y) in the pixels of the uploaded image. A segmentation model answers `mask` UINT8
[N, H, W] (UINT16 past 256 codes), each pixel's code index at the uploaded image's size (the images of one request
must then have one size), and `shares` FP32 [N, codes], the share of the pixels of each code.
Binary tensor data (the Triton extension) is not supported: clients send JSON (tritonclient: binary_data=False).

A body is parsed under a memory charge (`parsed_bytes`): JSON expands (a 2-byte `{}` becomes a 64-byte dict and
its list slot), so the charge counts the values the body can hold, not only its bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from app.core.errors import CoreError, FileTooLarge, TooManyFiles
from app.core.prediction import Answer, Mask, Points, Prediction, Values
from training.manifest import MULTI_LABEL, REGRESSION, SEGMENTATION, SINGLE_LABEL
from training.manifest import POINTS as KEY_POINTS

INPUT = "image"
PROBABILITIES, LABEL, LABELS, VALUES, POINTS = "probabilities", "label", "labels", "values", "points"
MASK, SHARES = "mask", "shares"
OUTPUTS: dict[str, tuple[str, ...]] = {  # each kind's outputs
    SINGLE_LABEL: (PROBABILITIES, LABEL),
    MULTI_LABEL: (PROBABILITIES, LABEL, LABELS),
    REGRESSION: (VALUES,),
    KEY_POINTS: (POINTS,),
    SEGMENTATION: (MASK, SHARES),
}
# The memory a mask output holds per pixel while the answer is made: a list slot (8), its copy in the validated
# model (8) and the JSON text (up to 4 characters, as str and as bytes), with room to spare.
MASK_ANSWER_BYTES_PER_PIXEL = 40

Parameters = dict[str, Any]


class InvalidInferenceRequest(CoreError):
    code = "invalid_inference_request"


class RequestTooLarge(CoreError):
    code = "request_too_large"


# Python memory per JSON value once parsed and validated, at most: a dict (64 bytes) or a key and its value (a
# str is 49 bytes + its characters, counted in the body's size), a slot in its list and in the validated copy,
# and the allocator's rounding. tests/test_v2_memory.py checks it against the measured growth.
PARSED_BYTES_PER_VALUE = 160


def parsed_bytes(body: bytes) -> int:
    """An upper bound of the memory parsing and validating `body` holds beside its bytes: the decoded text, the
    base64 files decoded from it, and PARSED_BYTES_PER_VALUE for every value the body can hold (each one follows
    a `[`, a `,` or a `:`; counting them in strings too only over-counts)."""
    values = 1 + body.count(b"[") + body.count(b",") + body.count(b":")
    return 2 * len(body) + PARSED_BYTES_PER_VALUE * values


def parse_json(body: bytes) -> Any:
    """The body parsed (a thread's work: it may take a while and must not block the event loop). Raises
    ValueError for a body that is not JSON, not UTF-8, or nested deeper than Python's recursion limit."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


class ErrorV2(BaseModel):
    error: str = Field(description="what went wrong, in a sentence")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class RequestInput(BaseModel):
    name: str
    shape: list[int] = Field(fail_fast=True)
    datatype: str
    parameters: Parameters | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = None
    # fail_fast: one error per list, not one per bad item (a body of a million `{}` inputs would make millions)
    inputs: list[RequestInput] = Field(fail_fast=True)
    outputs: list[RequestOutput] | None = Field(None, fail_fast=True)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": INPUT, "shape": [1], "datatype": "BYTES", "data": ["iVBORw0KGgo..."]}
                    ],
                    "outputs": [{"name": LABEL}, {"name": PROBABILITIES}],
                }
            ]
        }
    }


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


def model_metadata(
    name: str, version: str, platform: str, classes: Sequence[str], kind: str
) -> ModelMetadata:
    n = len(classes)
    shapes = {
        PROBABILITIES: ("FP32", [-1, n]), LABEL: ("BYTES", [-1]), LABELS: ("BOOL", [-1, n]),
        VALUES: ("FP32", [-1, n]), POINTS: ("FP32", [-1, n, 2]),
        MASK: (mask_datatype(n), [-1, -1, -1]), SHARES: ("FP32", [-1, n]),
    }  # fmt: skip
    return ModelMetadata(
        name=name,
        versions=[version],
        platform=platform,
        inputs=[TensorMetadata(name=INPUT, datatype="BYTES", shape=[-1])],
        outputs=[TensorMetadata(name=o, datatype=shapes[o][0], shape=shapes[o][1]) for o in OUTPUTS[kind]],
    )


def mask_datatype(codes: int) -> str:
    return "UINT8" if codes <= 256 else "UINT16"


def mask_size(answers: Sequence[Answer]) -> tuple[int, int]:
    """(width, height) of the masks of one request, which must be one: a tensor [N, H, W] has one H and W."""
    sizes = {a.size for a in answers if isinstance(a, Mask)}
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise InvalidInferenceRequest(
            f"The images have different sizes ({found}): the mask output is one tensor [N, H, W], so send images "
            "of one size per request (or one image per request)."
        )
    return next(iter(sizes), (0, 0))


def threshold_of(request: InferenceRequest, learners: float | None) -> float | None:
    """A multi-label request's `parameters.threshold` (in [0, 1]), else the learner's (`learners`); a single-label
    model (`learners` None) refuses one."""
    given = (request.parameters or {}).get("threshold")
    if given is None:
        return learners
    if learners is None:
        raise InvalidInferenceRequest("parameters.threshold applies to multi-label models only.")
    if isinstance(given, bool) or not isinstance(given, int | float) or not 0 <= given <= 1:
        raise InvalidInferenceRequest(f"parameters.threshold must be a number in [0, 1], not {given!r}.")
    return float(given)


def image_elements(request: InferenceRequest, max_files: int) -> list[str]:
    """The request's base64 image files, checked for shape, type and count (decoding is `decode_element`)."""
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
        names = ", ".join(repr(i.name) for i in request.inputs) or "none"
        raise InvalidInferenceRequest(f"This model takes one input named '{INPUT}'; the request has {names}.")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInferenceRequest(
            f"Input '{INPUT}' must be BYTES (base64 image files), not {tensor.datatype}."
        )
    if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data):
        raise InvalidInferenceRequest(
            f"Input '{INPUT}' must have shape [N] with N = the number of elements in data "
            f"({len(tensor.data)}); the request says {tensor.shape}."
        )
    if not tensor.data:
        raise InvalidInferenceRequest(f"Input '{INPUT}' has no images.")
    if len(tensor.data) > max_files:
        raise TooManyFiles(f"{len(tensor.data)} images sent; the limit is {max_files} per request.")
    for i, element in enumerate(tensor.data):
        if not isinstance(element, str):
            raise InvalidInferenceRequest(f"Element {i} of '{INPUT}' must be a base64 string.")
    return list(tensor.data)


def decode_element(index: int, element: str, max_bytes: int) -> bytes:
    """One element's file bytes, under the same size limit as an upload to /predict."""
    if len(element) // 4 * 3 > max_bytes + 2:
        raise FileTooLarge.over(max_bytes, subject=f"Image {index}: the file")
    try:
        data = base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInferenceRequest(f"Element {index} of '{INPUT}' is not valid base64.") from None
    if len(data) > max_bytes:
        raise FileTooLarge.over(max_bytes, len(data), subject=f"Image {index}: the file")
    return data


def requested_outputs(request: InferenceRequest, kind: str) -> list[str]:
    known = OUTPUTS[kind]
    if request.outputs is None:
        return list(known)
    names = [o.name for o in request.outputs]
    if unknown := [n for n in names if n not in known]:
        raise InvalidInferenceRequest(f"Unknown output {unknown[0]!r}; this model has {', '.join(known)}.")
    return names


def inference_response(
    model_name: str,
    version: str,
    request: InferenceRequest,
    answers: Sequence[Answer],
    kind: str,
    n_outputs: int,
    threshold: float | None,
) -> InferenceResponse:
    """`threshold`: a multi-label model's (the `labels` output); `n_outputs`: its classes, values or points."""
    n = len(answers)
    predictions = [a for a in answers if isinstance(a, Prediction)]
    masks = [a for a in answers if isinstance(a, Mask)]
    width, height = mask_size(masks)
    outputs = {
        PROBABILITIES: lambda: ResponseOutput(
            name=PROBABILITIES, datatype="FP32", shape=[n, n_outputs],
            data=[p for prediction in predictions for p in prediction.probabilities],
        ),
        LABEL: lambda: ResponseOutput(name=LABEL, datatype="BYTES", shape=[n], data=[p.label for p in predictions]),
        LABELS: lambda: ResponseOutput(
            name=LABELS, datatype="BOOL", shape=[n, n_outputs],
            data=[p > (threshold or 0.0) for prediction in predictions for p in prediction.probabilities],
            parameters={"threshold": threshold},
        ),
        VALUES: lambda: ResponseOutput(
            name=VALUES, datatype="FP32", shape=[n, n_outputs],
            data=[v for a in answers if isinstance(a, Values) for v in a.values],
        ),
        POINTS: lambda: ResponseOutput(
            name=POINTS, datatype="FP32", shape=[n, n_outputs, 2],
            data=[c for a in answers if isinstance(a, Points) for point in a.points for c in point],
        ),
        MASK: lambda: ResponseOutput(
            name=MASK, datatype=mask_datatype(n_outputs), shape=[n, height, width],
            data=[code for m in masks for code in m.ids.ravel().tolist()],
        ),
        SHARES: lambda: ResponseOutput(
            name=SHARES, datatype="FP32", shape=[n, n_outputs],
            data=[share for m in masks for share in m.shares(n_outputs)],
        ),
    }  # fmt: skip
    return InferenceResponse(
        model_name=model_name,
        model_version=version,
        id=request.id,
        outputs=[outputs[name]() for name in requested_outputs(request, kind)],
    )
