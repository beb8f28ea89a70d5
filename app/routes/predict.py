"""POST /predict and POST /predict/batch: upload -> bounded read -> decode (thread pool) -> batcher -> JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.deps import ServiceDep
from app.errors import ApiError, FileTooLarge, TooManyFiles
from app.imaging import decode_image, safe_filename
from app.predictor import Prediction
from app.schemas import (
    BatchError,
    BatchPrediction,
    BatchResponse,
    ErrorBody,
    LabelProbability,
    PredictionResponse,
    error_responses,
)
from app.service import Service

router = APIRouter(tags=["predict"])

TopK = Annotated[
    int | None,
    Query(ge=1, le=1000, description="how many classes to list in `top` (default: the server's TOP_K)"),
]


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    if upload.size is not None and upload.size > limit:
        raise FileTooLarge(f"The file is {upload.size:,} bytes; the limit is {limit:,} bytes.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"The file is larger than the limit of {limit:,} bytes.")
    return data


def to_response(pred: Prediction, service: Service, top_k: int | None) -> PredictionResponse:
    k = min(top_k or service.settings.top_k, len(service.predictor.classes))
    top = [LabelProbability(label=c, probability=p) for c, p in pred.top(service.predictor.classes, k)]
    return PredictionResponse(label=pred.label, probability=pred.probability, top=top)


@router.post(
    "/predict",
    summary="Classify one image",
    responses=error_responses(413, 415, 422, 503),
)
async def predict(
    file: Annotated[UploadFile, File(description="a JPEG, PNG, WebP, GIF or BMP image")],
    service: ServiceDep,
    top_k: TopK = None,
) -> PredictionResponse:
    with service.batcher.expecting(1):
        data = await read_upload(file, service.settings.max_upload_bytes)
        image = await run_in_threadpool(decode_image, data, service.settings.max_pixels)
    [prediction] = await service.batcher.submit([image])
    return to_response(prediction, service, top_k)


def decode_all(uploads: list[tuple[str, bytes | ApiError]], max_pixels: int) -> list[Image.Image | ApiError]:
    decoded: list[Image.Image | ApiError] = []
    for _, data in uploads:
        try:
            decoded.append(data if isinstance(data, ApiError) else decode_image(data, max_pixels))
        except ApiError as e:
            decoded.append(e)
    return decoded


@router.post(
    "/predict/batch",
    summary="Classify several images in one request",
    description="Each file gets its own answer, in upload order: a prediction, or an error that does not "
    "affect the other files.",
    responses=error_responses(413, 422, 503),
)
async def predict_batch(
    files: Annotated[list[UploadFile], File(description="images, repeated field `files`")],
    service: ServiceDep,
    top_k: TopK = None,
) -> BatchResponse:
    settings = service.settings
    if len(files) > settings.max_files:
        raise TooManyFiles(f"{len(files)} files sent; the limit is {settings.max_files} per request.")
    uploads: list[tuple[str, bytes | ApiError]] = []
    with service.batcher.expecting(len(files)):
        for upload in files:
            name = safe_filename(upload.filename)
            try:
                uploads.append((name, await read_upload(upload, settings.max_upload_bytes)))
            except ApiError as e:
                uploads.append((name, e))
        decoded = await run_in_threadpool(decode_all, uploads, settings.max_pixels)
    images = [d for d in decoded if isinstance(d, Image.Image)]
    predictions = iter(await service.batcher.submit(images))
    results: list[BatchPrediction | BatchError] = []
    for (name, _), item in zip(uploads, decoded, strict=True):
        if isinstance(item, ApiError):
            results.append(BatchError(filename=name, error=ErrorBody(code=item.code, detail=item.detail)))
        else:
            answer = to_response(next(predictions), service, top_k)
            results.append(BatchPrediction(filename=name, **answer.model_dump()))
    return BatchResponse(results=results)
