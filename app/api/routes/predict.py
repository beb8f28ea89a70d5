"""Classify uploads: POST /predict and /predict/batch (the default model) and the same under /models/{name}.

body (bounded, charged to the memory budget, key checked: app/api middleware) -> the files in it
(app/api/uploads.py) -> the model's unit (decode, item transforms, batcher) -> JSON, with X-Model-Name and
X-Model-Version on every answer a model gave. The handlers read the body themselves: FastAPI's form parsing
(temporary files, UploadFile objects, validation) cost more than the model on small models. The request bodies
are described in OpenAPI by hand (`*_BODY`), so Swagger still offers a file picker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from app.api.capturing import note
from app.api.errors import item_error
from app.api.masks import PNG_RESPONSE, Overlay, OverlayUnsupported, mask_answer, segmentation_response
from app.api.policy import Body, Key, policy
from app.api.schemas import BatchResponse, PredictionResponse, error_responses
from app.api.uploads import RAW_TYPES, SeveralFiles, Upload, read_uploads
from app.config import Settings
from app.core.errors import CoreError, TooManyFiles
from app.core.prediction import Answer, ItemError, Mask, Points, Values
from app.core.repository import ModelRepository
from app.core.unit import ModelUnit
from training.manifest import SEGMENTATION

router = APIRouter(tags=["predict"])

TopK = Annotated[
    int | None,
    Query(
        ge=1,
        le=1000,
        description="classifiers only: how many classes to list in `top` (default: the server's TOP_K); a "
        "regression, key point or segmentation model answers 422 top_k_not_applicable",
    ),
]
Threshold = Annotated[
    float | None,
    Query(
        ge=0,
        le=1,
        description="multi-label models only: give the labels whose probability is over this (default: the "
        "learner's own threshold, as learn.predict)",
    ),
]
ModelName = Annotated[str, Path(description="a model's name, as listed by GET /models")]

FILE = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
SINGLE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {**FILE, "description": "a JPEG, PNG, WebP, GIF or BMP image"}},
                "required": ["file"],
            }
        },
        **{t: {"schema": {**FILE, "description": "the image file itself"}} for t in RAW_TYPES},
    },
}
BATCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": FILE,
                        "minItems": 1,
                        "description": "images, field repeated",
                    }
                },
                "required": ["files"],
            }
        }
    },
}
SINGLE: dict[str, Any] = {
    "response_model": PredictionResponse,
    "responses": {**PNG_RESPONSE, **error_responses(400, 404, 408, 413, 415, 422, 503)},
    "openapi_extra": {"requestBody": SINGLE_BODY},
    "description": "Send the image as multipart/form-data in field `file`, or as the request body itself with "
    "its Content-Type (`curl --data-binary @x.png -H 'Content-Type: image/png'`). A segmentation model answers "
    "its mask as a PNG instead of JSON for `Accept: image/png`.",
}
BATCH: dict[str, Any] = {
    "response_model": BatchResponse,
    "responses": error_responses(400, 404, 408, 413, 415, 422, 503),
    "openapi_extra": {"requestBody": BATCH_BODY},
    "description": "Each file gets its own answer, in upload order: a prediction, or an error that does not "
    "affect the other files.",
}


def model_headers(unit: ModelUnit) -> dict[str, str]:
    return {"X-Model-Name": unit.name, "X-Model-Version": unit.version}


def resolve(repository: ModelRepository, name: str | None) -> ModelUnit:
    return repository.get(name) if name is not None else repository.default()


class ThresholdUnsupported(CoreError):
    code = "bad_request"


class TopKNotApplicable(CoreError):
    """`top_k` lists a classifier's most likely classes; a regression answers every value and key points every
    point, so an explicit `top_k` would be ignored: refused rather than silently dropped."""

    code = "top_k_not_applicable"


@dataclass(frozen=True, slots=True)
class Reading:
    """How one request reads a model's answers: its kind, its output names, how many classes to list, and
    (multi-label) the threshold over which a label is given."""

    kind: str
    classes: Sequence[str]
    k: int
    threshold: float | None

    @classmethod
    def of(
        cls,
        unit: ModelUnit,
        settings: Settings,
        top_k: int | None,
        threshold: float | None,
        overlay: bool = False,
    ) -> Reading:
        manifest = unit.manifest
        if top_k is not None and not manifest.classifier:
            raise TopKNotApplicable(
                f"top_k lists a classifier's most likely classes, and {unit.name} is a {manifest.kind}: its "
                "answer is not a list of classes to cut; drop top_k"
            )
        if overlay and manifest.kind != SEGMENTATION:
            raise OverlayUnsupported(
                f"overlay applies to segmentation models; {unit.name} is a {manifest.kind}"
            )
        if not manifest.multi_label:
            if threshold is not None:
                raise ThresholdUnsupported(
                    f"threshold applies to multi-label models; {unit.name} is a {manifest.kind}"
                    + (" (its answer is its most likely class)" if manifest.classifier else "")
                )
            return cls(manifest.kind, unit.classes, top_k or settings.top_k, None)
        given = threshold if threshold is not None else manifest.labels_threshold
        return cls(manifest.kind, unit.classes, top_k or len(unit.classes), given)


def answer(outcome: Answer, reading: Reading) -> dict[str, Any]:
    """The JSON of one answer (PredictionResponse's shape for its kind, built without a model object on the hot
    path)."""
    if isinstance(outcome, Mask):
        return mask_answer(reading.kind, outcome, reading.classes)
    if isinstance(outcome, Values):
        values = [{"name": n, "value": v} for n, v in zip(reading.classes, outcome.values, strict=True)]
        return {"kind": reading.kind, "values": values}
    if isinstance(outcome, Points):
        points = [
            {"name": n, "x": x, "y": y} for n, (x, y) in zip(reading.classes, outcome.points, strict=True)
        ]
        return {"kind": reading.kind, "points": points}
    top = [{"label": c, "probability": p} for c, p in outcome.top(reading.classes, reading.k)]
    body = {"kind": reading.kind, "label": outcome.label, "probability": outcome.probability, "top": top}
    if reading.threshold is not None:
        over = outcome.over(reading.classes, reading.threshold)
        body |= {"labels": [{"label": c, "probability": p} for c, p in over], "threshold": reading.threshold}
    return body


async def uploads_of(request: Request, field: str, settings: Settings, raw: bool) -> list[Upload]:
    body = await request.body()
    return read_uploads(request.headers.get("content-type", ""), body, field, settings.max_upload_bytes, raw)


async def predict_one(
    request: Request,
    repository: ModelRepository,
    name: str | None,
    top_k: int | None,
    threshold: float | None,
    overlay: bool = False,
) -> Response:
    settings: Settings = request.state.settings
    resolve(repository, name)  # an unknown model is a 404 before the body is read
    uploads = await uploads_of(request, "file", settings, raw=True)
    if len(uploads) > 1:  # never drop files silently
        batch = "/predict/batch" if name is None else f"/models/{name}/predict/batch"
        raise SeveralFiles(
            f"{len(uploads)} files were sent in field 'file'; this route classifies one. "
            f"Send several to {batch}, in field 'files'."
        )
    [upload] = uploads
    unit = resolve(repository, name)  # again, after the await: requests start on the current version
    reading = Reading.of(unit, settings, top_k, threshold, overlay)
    [outcome] = await unit.classify([upload.data])
    headers = model_headers(unit)
    if isinstance(outcome, ItemError):
        return item_error(request.scope, outcome, headers)
    if isinstance(outcome, Mask) and isinstance(upload.data, bytes):
        return await segmentation_response(
            request, reading.kind, outcome, reading.classes, upload.data, overlay, headers
        )
    body = answer(outcome, reading)
    note(request, unit, upload.data, outcome, body)  # capture (app/api/capturing.py): nothing when off
    return JSONResponse(body, headers=headers)


async def predict_many(
    request: Request,
    repository: ModelRepository,
    name: str | None,
    top_k: int | None,
    threshold: float | None,
) -> JSONResponse:
    settings: Settings = request.state.settings
    resolve(repository, name)
    uploads = await uploads_of(request, "files", settings, raw=False)
    if len(uploads) > settings.max_files:
        raise TooManyFiles(f"{len(uploads)} files sent; the limit is {settings.max_files} per request.")
    unit = resolve(repository, name)
    reading = Reading.of(unit, settings, top_k, threshold)
    outcomes = await unit.classify([u.data for u in uploads])
    results = [
        {"filename": u.filename, "error": {"code": o.code, "detail": o.detail}}
        if isinstance(o, ItemError)
        else {"filename": u.filename, **answer(o, reading)}
        for u, o in zip(uploads, outcomes, strict=True)
    ]
    return JSONResponse({"results": results}, headers=model_headers(unit))


# The handlers take the repository and settings from the request's state rather than as dependencies: on the
# hot path, each FastAPI dependency costs a coroutine and its solving, per request.


@router.post("/predict", summary="Classify one image with the default model", **SINGLE)
@policy(Key.API, Body.SINGLE)
async def predict(
    request: Request, top_k: TopK = None, threshold: Threshold = None, overlay: Overlay = False
) -> Response:
    return await predict_one(request, request.state.repository, None, top_k, threshold, overlay)


@router.post("/predict/batch", summary="Classify several images with the default model", **BATCH)
@policy(Key.API, Body.REQUEST)
async def predict_batch(request: Request, top_k: TopK = None, threshold: Threshold = None) -> JSONResponse:
    return await predict_many(request, request.state.repository, None, top_k, threshold)


@router.post("/models/{name}/predict", summary="Classify one image with the named model", **SINGLE)
@policy(Key.API, Body.SINGLE)
async def predict_with(
    name: ModelName,
    request: Request,
    top_k: TopK = None,
    threshold: Threshold = None,
    overlay: Overlay = False,
) -> Response:
    return await predict_one(request, request.state.repository, name, top_k, threshold, overlay)


@router.post("/models/{name}/predict/batch", summary="Classify several images with the named model", **BATCH)
@policy(Key.API, Body.REQUEST)
async def predict_batch_with(
    name: ModelName, request: Request, top_k: TopK = None, threshold: Threshold = None
) -> JSONResponse:
    return await predict_many(request, request.state.repository, name, top_k, threshold)
