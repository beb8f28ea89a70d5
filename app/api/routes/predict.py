"""Classify uploads: POST /predict and /predict/batch (the default model) and the same under /models/{name}.

upload -> bounded read -> the model's unit (decode, item transforms, batcher) -> JSON, with X-Model-Name and
X-Model-Version on every answer that a model gave.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, UploadFile
from fastapi.responses import JSONResponse

from app.api.deps import RepositoryDep, SettingsDep
from app.api.errors import ERRORS
from app.api.schemas import (
    BatchError,
    BatchPrediction,
    BatchResponse,
    ErrorBody,
    PredictionResponse,
    error_responses,
    render,
)
from app.api.uploads import read_upload, safe_filename
from app.config import Settings
from app.core.errors import TooManyFiles
from app.core.prediction import ItemError
from app.core.repository import ModelRepository
from app.core.unit import ModelUnit

router = APIRouter(tags=["predict"])

TopK = Annotated[
    int | None,
    Query(ge=1, le=1000, description="how many classes to list in `top` (default: the server's TOP_K)"),
]
ModelName = Annotated[str, Path(description="a model's name, as listed by GET /models")]
ImageFile = Annotated[UploadFile, File(description="a JPEG, PNG, WebP, GIF or BMP image")]
ImageFiles = Annotated[list[UploadFile], File(description="images, repeated field `files`")]

SINGLE: dict[str, Any] = {
    "response_model": PredictionResponse,
    "responses": error_responses(400, 404, 413, 415, 422, 503),
}
BATCH: dict[str, Any] = {
    "response_model": BatchResponse,
    "responses": error_responses(400, 404, 413, 422, 503),
    "description": "Each file gets its own answer, in upload order: a prediction, or an error that does not "
    "affect the other files.",
}


def model_headers(unit: ModelUnit) -> dict[str, str]:
    return {"X-Model-Name": unit.name, "X-Model-Version": unit.version}


def resolve(repository: ModelRepository, name: str | None) -> ModelUnit:
    return repository.get(name) if name is not None else repository.default()


async def predict_one(
    repository: ModelRepository, name: str | None, file: UploadFile, settings: Settings, top_k: int | None
) -> JSONResponse:
    resolve(repository, name)  # an unknown model is a 404 before anything is read
    item = await read_upload(file, settings.max_upload_bytes)
    unit = resolve(repository, name)  # again, after the await: requests start on the current version
    [outcome] = await unit.classify([item])
    headers = model_headers(unit)
    if isinstance(outcome, ItemError):
        status, extra = ERRORS[outcome.code]
        return JSONResponse(
            {"detail": outcome.detail, "code": outcome.code}, status, {**headers, **(extra or {})}
        )
    answer = render(outcome, unit.classes, top_k or settings.top_k)
    return JSONResponse(answer.model_dump(), headers=headers)


async def predict_many(
    repository: ModelRepository,
    name: str | None,
    files: list[UploadFile],
    settings: Settings,
    top_k: int | None,
) -> JSONResponse:
    resolve(repository, name)
    if len(files) > settings.max_files:
        raise TooManyFiles(f"{len(files)} files sent; the limit is {settings.max_files} per request.")
    names = [safe_filename(f.filename) for f in files]
    items = [await read_upload(f, settings.max_upload_bytes) for f in files]
    unit = resolve(repository, name)
    outcomes = await unit.classify(items)
    k = top_k or settings.top_k
    results: list[BatchPrediction | BatchError] = [
        BatchError(filename=n, error=ErrorBody(code=o.code, detail=o.detail))
        if isinstance(o, ItemError)
        else BatchPrediction(filename=n, **render(o, unit.classes, k).model_dump())
        for n, o in zip(names, outcomes, strict=True)
    ]
    return JSONResponse(BatchResponse(results=results).model_dump(), headers=model_headers(unit))


@router.post("/predict", summary="Classify one image with the default model", **SINGLE)
async def predict(
    file: ImageFile, repository: RepositoryDep, settings: SettingsDep, top_k: TopK = None
) -> JSONResponse:
    return await predict_one(repository, None, file, settings, top_k)


@router.post("/predict/batch", summary="Classify several images with the default model", **BATCH)
async def predict_batch(
    files: ImageFiles, repository: RepositoryDep, settings: SettingsDep, top_k: TopK = None
) -> JSONResponse:
    return await predict_many(repository, None, files, settings, top_k)


@router.post("/models/{name}/predict", summary="Classify one image with the named model", **SINGLE)
async def predict_with(
    name: ModelName, file: ImageFile, repository: RepositoryDep, settings: SettingsDep, top_k: TopK = None
) -> JSONResponse:
    return await predict_one(repository, name, file, settings, top_k)


@router.post("/models/{name}/predict/batch", summary="Classify several images with the named model", **BATCH)
async def predict_batch_with(
    name: ModelName, files: ImageFiles, repository: RepositoryDep, settings: SettingsDep, top_k: TopK = None
) -> JSONResponse:
    return await predict_many(repository, name, files, settings, top_k)
