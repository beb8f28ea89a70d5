"""Why this answer? POST /explain (the default model) and /models/{name}/explain: the prediction plus a Grad-CAM
heatmap of where the evidence for one class is (app/core/explain.py), for one image sent as to /predict.

`Accept: image/png` answers the overlay itself; otherwise JSON: the prediction's fields, the target, the map as a
small grid of floats in [0, 1] and the overlay as a data URL. The work and its limits: app/core/explain_service.py.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.api.errors import item_error
from app.api.policy import Body, Key, policy
from app.api.routes.predict import SINGLE_BODY, ModelName, Reading, answer, model_headers, resolve, uploads_of
from app.api.schemas import ErrorResponse, MultiLabelAnswer, SingleLabelAnswer, error_responses
from app.api.uploads import SeveralFiles
from app.config import Settings
from app.core.explain_service import Explained, Explainer
from app.core.prediction import ItemError

router = APIRouter(tags=["explain"])

Target = Annotated[
    str | None,
    Query(
        max_length=1000, description="the class (multi-label: the label) to explain; default: the top class"
    ),
]


class HeatMap(BaseModel):
    width: int = Field(description="cells across (the feature map's resolution, coarser than the image)")
    height: int = Field(description="cells down")
    values: list[list[float]] = Field(
        description="rows of floats in [0, 1]: 1 where the evidence is strongest"
    )


class ExplainFields(BaseModel):
    target: str = Field(
        description="the class (multi-label: the label) explained: `?target=`, else the top one"
    )
    map: HeatMap
    overlay: str = Field(description="a PNG data URL: the upload, at its own size, with the map laid over it")
    explained_with: str = Field(description="which model file computed the map (the .pkl, also for ONNX)")


EXPLAINED_EXAMPLE: dict[str, Any] = {
    "target": "7",
    "map": {"width": 2, "height": 2, "values": [[0.0, 0.41], [0.12, 1.0]]},
    "overlay": "data:image/png;base64,iVBORw0KGgo...",
    "explained_with": "digits.pkl",
}


class SingleLabelExplained(SingleLabelAnswer, ExplainFields):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {**example, **EXPLAINED_EXAMPLE}
                for example in SingleLabelAnswer.model_json_schema()["examples"]
            ]
        }
    }


class MultiLabelExplained(MultiLabelAnswer, ExplainFields):
    model_config = {"json_schema_extra": {}}


ExplainResponse = Annotated[SingleLabelExplained | MultiLabelExplained, Field(discriminator="kind")]
RESPONSES = {
    **error_responses(400, 404, 408, 413, 415, 422, 503),
    409: {"model": ErrorResponse, "description": "the model cannot be explained (code explain_unsupported): "
          "served from ONNX without its .pkl beside it, or not a classifier"},
    200: {"model": ExplainResponse, "content": {"image/png": {}}, "description": "the prediction and its heatmap "
          "(JSON), or the overlay (Accept: image/png)"},
}  # fmt: skip
EXPLAIN: dict[str, Any] = {
    "responses": RESPONSES,
    "openapi_extra": {"requestBody": SINGLE_BODY},
    "description": "Send one image as to /predict. `?target=LABEL` explains that class instead of the top one. "
    "JSON: the prediction, `target`, `map` {width, height, values (rows of floats in [0, 1])}, `overlay` (a PNG "
    "data URL of the image with the map over it), `explained_with`; `Accept: image/png`: the overlay PNG.",
}


async def explain_one(request: Request, name: str | None, target: str | None) -> Response:
    settings: Settings = request.state.settings
    explainer: Explainer = request.state.explainer
    repository = request.state.repository
    explainer.check(
        resolve(repository, name)
    )  # unknown or unexplainable models answer before the body is read
    uploads = await uploads_of(request, "file", settings, raw=True)
    if len(uploads) > 1:
        raise SeveralFiles(f"{len(uploads)} files were sent in field 'file'; this route explains one.")
    [upload] = uploads
    unit = resolve(repository, name)
    reading = Reading.of(unit, settings, None, None)
    if isinstance(upload.data, ItemError):  # e.g. over MAX_UPLOAD_BYTES
        return item_error(request.scope, upload.data, model_headers(unit))
    done = await explainer.explain(unit, upload.data, target)
    metrics = getattr(request.state, "metrics", None)
    if metrics is not None:
        metrics.explanations.labels(unit.name).inc()
        metrics.explain_seconds.labels(unit.name).observe(done.seconds)
    headers = {**model_headers(unit), "X-Explain-Target": done.explanation.target}
    if "image/png" in request.headers.get("accept", ""):
        return Response(done.overlay, media_type="image/png", headers=headers)
    return JSONResponse(body_of(done, reading), headers=headers)


def body_of(done: Explained, reading: Reading) -> dict[str, Any]:
    cam = done.explanation.map
    height, width = cam.shape
    return {
        **answer(done.explanation.prediction, reading),
        "target": done.explanation.target,
        "map": {
            "width": width,
            "height": height,
            "values": [[round(v, 4) for v in row] for row in cam.tolist()],
        },
        "overlay": "data:image/png;base64," + base64.b64encode(done.overlay).decode("ascii"),
        "explained_with": done.explained_with,
    }


@router.post("/explain", summary="Why this answer? The default model's prediction and its heatmap", **EXPLAIN)
@policy(Key.API, Body.SINGLE)
async def explain(request: Request, target: Target = None) -> Response:
    return await explain_one(request, None, target)


@router.post(
    "/models/{name}/explain",
    summary="Why this answer? The named model's prediction and its heatmap",
    **EXPLAIN,
)
@policy(Key.API, Body.SINGLE)
async def explain_with(name: ModelName, request: Request, target: Target = None) -> Response:
    return await explain_one(request, name, target)
