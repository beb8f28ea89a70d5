"""Response models: they validate, filter and document every answer in Swagger."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field


class LabelProbability(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1)


class SingleLabelAnswer(BaseModel):
    kind: Literal["single-label classifier"] = Field(
        description="what the model predicts: one class per image"
    )
    label: str = Field(description="the most likely class")
    probability: float = Field(ge=0, le=1, description="its probability")
    top: list[LabelProbability] = Field(description="the top_k classes, most likely first")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "kind": "single-label classifier",
                    "label": "7",
                    "probability": 0.993,
                    "top": [{"label": "7", "probability": 0.993}, {"label": "1", "probability": 0.004}],
                }
            ]
        }
    }


class MultiLabelAnswer(BaseModel):
    kind: Literal["multi-label classifier"] = Field(
        description="what the model predicts: every label whose own probability is over the threshold"
    )
    labels: list[LabelProbability] = Field(
        description="the labels over the threshold, most likely first (possibly none): learn.predict's labels"
    )
    threshold: float = Field(
        ge=0, le=1, description="the threshold used: the request's, else the learner's own (loss_func.thresh)"
    )
    label: str = Field(description="the most likely label, whether or not it is over the threshold")
    probability: float = Field(ge=0, le=1, description="its probability")
    top: list[LabelProbability] = Field(
        description="every label with its probability (or the top_k asked for), most likely first"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "kind": "multi-label classifier",
                    "labels": [
                        {"label": "disc", "probability": 0.97},
                        {"label": "square", "probability": 0.88},
                    ],
                    "threshold": 0.5,
                    "label": "disc",
                    "probability": 0.97,
                    "top": [
                        {"label": "disc", "probability": 0.97},
                        {"label": "square", "probability": 0.88},
                        {"label": "bar", "probability": 0.04},
                        {"label": "cross", "probability": 0.01},
                    ],
                }
            ]
        }
    }


class NamedValue(BaseModel):
    name: str
    value: float


class RegressionAnswer(BaseModel):
    kind: Literal["regression"] = Field(description="what the model predicts: numbers")
    values: list[NamedValue] = Field(
        description="the model's values in order, named as in the manifest's classes"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"kind": "regression", "values": [{"name": "value_1", "value": 23.5}]}]
        }
    }


class NamedPoint(BaseModel):
    name: str
    x: float = Field(description="from the uploaded image's left edge, in its pixels")
    y: float = Field(description="from its top edge, in its pixels")


class PointsAnswer(BaseModel):
    kind: Literal["key points"] = Field(description="what the model predicts: (x, y) points on the image")
    points: list[NamedPoint] = Field(
        description="the model's points in order, in the uploaded image's own pixels (learn.predict's, which are "
        "in the resized input's, mapped back through the learner's Resize)"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"kind": "key points", "points": [{"name": "point_1", "x": 312.4, "y": 190.8}]}]
        }
    }


class SegmentationAnswer(BaseModel):
    kind: Literal["segmentation"] = Field(description="what the model predicts: a code for every pixel")
    codes: list[str] = Field(description="the model's codes: a mask pixel of value i is codes[i]")
    width: int = Field(
        description="the mask's width: the uploaded image's, in its pixels (EXIF rotation applied)"
    )
    height: int = Field(description="the mask's height: the uploaded image's")
    shares: dict[str, float] = Field(description="code -> the share of the image's pixels given that code")
    mask: str = Field(
        description="the mask, base64 of an 8-bit greyscale PNG (16-bit past 256 codes) the size of the upload, "
        "pixel value = code index: learn.predict's mask at the model's input size, mapped back through the "
        "learner's resize (nearest neighbour; pixels a crop cut away take the nearest seen pixel's code). A PNG "
        "because it is lossless, small for masks and decoded by every language; `Accept: image/png` answers it "
        "without the JSON"
    )
    overlay: str | None = Field(
        None,
        description="with overlay=true: base64 of a PNG of the upload with the codes' colours blended in and a "
        "legend under it",
    )
    legend: dict[str, str] = Field(
        description="code -> its colour in the overlay (#rrggbb), for a client that draws the mask itself"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "kind": "segmentation",
                    "codes": ["background", "road", "car"],
                    "width": 640,
                    "height": 480,
                    "shares": {"background": 0.61, "road": 0.31, "car": 0.08},
                    "legend": {"background": "#000000", "road": "#e6194b", "car": "#3cb44b"},
                    "mask": "iVBORw0KGgoAAAANSUhEUgAAAoAAAAHgCAAAAAA...",
                }
            ]
        }
    }


PredictionResponse = Annotated[
    SingleLabelAnswer | MultiLabelAnswer | RegressionAnswer | PointsAnswer | SegmentationAnswer,
    Field(discriminator="kind"),
]


class SingleLabelFile(SingleLabelAnswer):
    filename: str = Field(description="the uploaded file's name, sanitised")


class MultiLabelFile(MultiLabelAnswer):
    filename: str = Field(description="the uploaded file's name, sanitised")


class RegressionFile(RegressionAnswer):
    filename: str = Field(description="the uploaded file's name, sanitised")


class PointsFile(PointsAnswer):
    filename: str = Field(description="the uploaded file's name, sanitised")


class SegmentationFile(SegmentationAnswer):
    filename: str = Field(description="the uploaded file's name, sanitised")


class ErrorBody(BaseModel):
    code: str
    detail: str


class BatchError(BaseModel):
    filename: str
    error: ErrorBody


class BatchResponse(BaseModel):
    results: list[
        SingleLabelFile | MultiLabelFile | RegressionFile | PointsFile | SegmentationFile | BatchError
    ] = Field(description="one entry per uploaded file, in upload order")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong, in a sentence")
    code: str = Field(description="stable machine-readable error code")


class HealthResponse(BaseModel):
    status: str


class RuntimeInfo(BaseModel):
    model: str = Field(description="the model's name (its file's stem)")
    version: str = Field(
        description="the model's export id: the first 12 hex characters of its .pkl's sha256, whichever backend"
    )
    backend: str = Field(description="fastai or onnx")
    device: str
    threads: int | None = Field(description="intra-op threads of the forward pass")
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    max_upload_bytes: int
    max_pixels: int
    max_files: int
    top_k: int
    versions: dict[str, str]


class ModelSummary(BaseModel):
    name: str
    version: str | None = Field(
        description="the export id: first 12 hex characters of the .pkl's sha256, whichever backend serves it; "
        "null if not loaded"
    )
    arch: str | None
    kind: str | None = Field(
        None,
        description="single-label classifier, multi-label classifier, regression, key points or segmentation",
    )
    classes: int | None = Field(description="number of classes")
    accuracy: float | None = Field(
        description="validation accuracy recorded at training (or measured by import --data); null if none"
    )
    source: str | None = Field(None, description="trained (python -m training train) or imported (import)")
    validated: bool | None = Field(
        None, description="false: no validation figure (imported without --data): answers are not vouched for"
    )
    ready: bool
    last_reload_error: str | None = Field(
        description="why the latest file for this name could not be loaded (the running version, if any, "
        "keeps serving); null once it loads"
    )


class ModelList(BaseModel):
    default: str | None = Field(description="the model that answers /predict, /predict/batch and /metadata")
    models: list[ModelSummary]


class ReloadResponse(BaseModel):
    loaded: list[str] = Field(description="new models")
    replaced: list[str] = Field(description="models whose new version was swapped in")
    removed: list[str] = Field(description="models whose file is gone, drained and unloaded")
    unchanged: list[str]
    failed: dict[str, str] = Field(
        description="name -> why it could not be loaded (the old version keeps serving)"
    )


class MetadataResponse(BaseModel):
    model: dict[str, Any] = Field(
        description="the model's manifest: classes, arch, input size, metrics, versions, ..."
    )
    runtime: RuntimeInfo


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the listed error statuses, all in the one error shape."""
    described = {
        400: "several models are served and none is the default (code model_required)",
        401: "missing or wrong API key",
        404: "no such model (code model_not_found)",
        408: "the request body did not arrive within BODY_TIMEOUT_SECONDS (code request_timeout)",
        413: "file or request too large, too many pixels, too many files, or more memory at once than the "
        "server's budget (code over_memory_budget)",
        415: "not a JPEG, PNG, WebP, GIF or BMP image, or a request Content-Type that carries none",
        422: "empty, truncated or corrupt image, a missing/misnamed field, or top_k for a model that is not a "
        "classifier (code top_k_not_applicable)",
        503: "overloaded: too many images waiting or the memory budget full (see Retry-After); or not ready",
    }
    return {s: {"model": ErrorResponse, "description": described[s]} for s in statuses}
