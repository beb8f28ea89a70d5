"""Response models: they validate, filter and document every answer in Swagger."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LabelProbability(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1)


class PredictionResponse(BaseModel):
    label: str = Field(description="the most likely class")
    probability: float = Field(ge=0, le=1, description="its probability")
    top: list[LabelProbability] = Field(description="the top_k classes, most likely first")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "label": "7",
                    "probability": 0.993,
                    "top": [{"label": "7", "probability": 0.993}, {"label": "1", "probability": 0.004}],
                }
            ]
        }
    }


class BatchPrediction(PredictionResponse):
    filename: str = Field(description="the uploaded file's name, sanitised")


class ErrorBody(BaseModel):
    code: str
    detail: str


class BatchError(BaseModel):
    filename: str
    error: ErrorBody


class BatchResponse(BaseModel):
    results: list[BatchPrediction | BatchError] = Field(
        description="one entry per uploaded file, in upload order"
    )


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong, in a sentence")
    code: str = Field(description="stable machine-readable error code")


class HealthResponse(BaseModel):
    status: str


class RuntimeInfo(BaseModel):
    device: str
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    max_upload_bytes: int
    max_pixels: int
    max_files: int
    top_k: int
    torch_threads: int
    versions: dict[str, str]


class MetadataResponse(BaseModel):
    model: dict[str, Any] = Field(
        description="the model's manifest: classes, arch, input size, metrics, versions, ..."
    )
    runtime: RuntimeInfo


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the listed error statuses, all in the one error shape."""
    described = {
        401: "missing or wrong API key",
        413: "file too large, too many pixels, or too many files",
        415: "not a JPEG, PNG, WebP, GIF or BMP image",
        422: "empty, truncated or corrupt image, or a missing/misnamed field",
        503: "overloaded (see Retry-After) or not ready",
    }
    return {s: {"model": ErrorResponse, "description": described[s]} for s in statuses}
