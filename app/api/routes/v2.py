"""The Open Inference Protocol's REST endpoints under /v2, for KServe, Triton clients and other v2 tooling.

Every model of the repository is `/v2/models/{name}` and `/v2/models/{name}/versions/{version}` (its version is
the first 12 hex characters of its file's sha256). Inference goes through the model's unit, as /predict does.
As the protocol asks, a request succeeds or fails as a whole: the first image that cannot be classified fails
it, with its index, in `{"error": "..."}` (the app's handlers answer every error under /v2 in that shape).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import Scope

from app.api import open_inference as oip
from app.api.deps import RepositoryDep, ServerState, ServerStateDep, SettingsDep
from app.api.errors import item_error
from app.api.policy import Body, Key, Shape, policy
from app.api.routes.health import check_ready
from app.config import Settings
from app.core.errors import CoreError, ModelNotFound
from app.core.prediction import ItemError, Mask
from app.core.repository import ModelRepository
from app.core.unit import Item, ModelUnit

BINARY_UNSUPPORTED = (
    "Binary tensor data is not supported: send BYTES elements as base64 strings in the JSON body "
    "(tritonclient: set_data_from_numpy(..., binary_data=False))."
)


class V2Route(APIRoute):
    """Reads every body as JSON whatever its Content-Type says (tritonclient sends none, `curl -d` sends
    form-urlencoded), and refuses Triton's binary tensor extension with a clear message. A body is read up to
    MAX_V2_REQUEST_BYTES, then parsed in a thread under its memory charge (`oip.parsed_bytes`), held until the
    answer is made; FastAPI then validates what was parsed (Starlette's Request keeps it in `_json`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_v2(request: Request) -> Response:
            raw = request.scope["headers"]
            if any(k == b"inference-header-content-length" for k, _ in raw):
                return JSONResponse({"error": BINARY_UNSUPPORTED}, status_code=400)
            headers = [(k, v) for k, v in raw if k != b"content-type"]
            request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
            if request.method != "POST":
                return await handle(request)
            settings = request.state.settings
            body = await read_body(request, settings.max_v2_request_bytes)
            budget = request.state.repository.budget
            async with budget.hold(oip.parsed_bytes(body), "this request's parsed JSON"):
                request._json = await parse(body)
                return await handle(request)

        return handle_v2


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit`, or at once when Content-Length says it will (Starlette's
    Request keeps it in `_body`)."""
    too_large = oip.RequestTooLarge(
        f"The request body is larger than the limit of {limit:,} bytes for Open Inference requests "
        "(LEARNSERVE_MAX_V2_REQUEST_BYTES)."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    request._body = b"".join(chunks)
    return request._body


async def parse(body: bytes) -> Any:
    try:
        return await run_in_threadpool(oip.parse_json, body)
    except ValueError as e:  # not JSON, or not UTF-8: as FastAPI reports it
        where = e.pos if isinstance(e, json.JSONDecodeError) else getattr(e, "start", 0)
        reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        error = {"type": "json_invalid", "loc": ("body", where), "msg": "JSON decode error", "input": {},
                 "ctx": {"error": reason}}  # fmt: skip
        raise RequestValidationError([error], body=body) from None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": oip.ErrorV2} for s in statuses}


router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)
open_v2 = policy(Key.NONE, shape=Shape.V2)
keyed_v2 = policy(Key.API, shape=Shape.V2)

ModelName = Annotated[str, Path(description="a model's name, as listed by GET /models")]
Version = Annotated[str, Path(description="the model's version: 12 hex characters of its file's sha256")]


def served(repository: ModelRepository, name: str, version: str | None = None) -> ModelUnit:
    unit = repository.get(name)
    if version is not None and version != unit.version:
        raise ModelNotFound(f"Model {name!r} has no version {version!r}; it serves version {unit.version}.")
    return unit


@router.get("", summary="Server metadata")
@open_v2
async def server_metadata(request: Request) -> oip.ServerMetadata:
    return oip.ServerMetadata(name="learnserve", version=request.app.version, extensions=[])


@router.get("/health/live", summary="The server answers")
@open_v2
async def server_live() -> oip.Live:
    return oip.Live(live=True)


@router.get("/health/ready", summary="The server can infer", responses=error_responses(503))
@open_v2
async def server_ready(state: ServerStateDep, repository: RepositoryDep) -> oip.Ready:
    check_ready(state, repository)
    return oip.Ready(ready=True)


async def model_ready(
    state: ServerState, repository: ModelRepository, name: str, version: str | None, settings: Settings
) -> oip.ModelReady:
    """Readiness is open to probes; when a key guards the models, a miss names no other model or version."""
    try:
        unit = served(repository, name, version)
    except ModelNotFound:
        if settings.api_key is None:
            raise
        raise ModelNotFound(f"Model {name!r} has no version {version!r}." if version else
                            f"There is no model {name!r}.") from None  # fmt: skip
    check_ready(state, repository, unit)
    return oip.ModelReady(name=name, ready=True)


@router.get("/models/{name}/ready", summary="The model can infer", responses=error_responses(404, 503))
@open_v2
async def ready(
    name: ModelName, state: ServerStateDep, repository: RepositoryDep, settings: SettingsDep
) -> oip.ModelReady:
    return await model_ready(state, repository, name, None, settings)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="This version of the model can infer",
    responses=error_responses(404, 503),
)
@open_v2
async def version_ready(
    name: ModelName, version: Version, state: ServerStateDep, repository: RepositoryDep, settings: SettingsDep
) -> oip.ModelReady:
    return await model_ready(state, repository, name, version, settings)


def metadata_of(unit: ModelUnit) -> oip.ModelMetadata:
    return oip.model_metadata(unit.name, unit.version, unit.backend.kind, unit.classes, unit.manifest.kind)


METADATA: dict[str, Any] = {"response_model_exclude_none": True, "responses": error_responses(404)}


@router.get("/models/{name}", summary="Model metadata: its input and output tensors", **METADATA)
@keyed_v2
async def model_metadata(name: ModelName, repository: RepositoryDep) -> oip.ModelMetadata:
    return metadata_of(served(repository, name))


@router.get("/models/{name}/versions/{version}", summary="Metadata of this version of the model", **METADATA)
@keyed_v2
async def version_metadata(name: ModelName, version: Version, repository: RepositoryDep) -> oip.ModelMetadata:
    return metadata_of(served(repository, name, version))


def elements_to_items(elements: list[str], max_bytes: int) -> list[Item]:
    items: list[Item] = []
    for i, element in enumerate(elements):
        try:
            items.append(oip.decode_element(i, element, max_bytes))
        except oip.InvalidInferenceRequest:
            raise
        except CoreError as e:
            items.append(ItemError.of(e))
    return items


async def infer_with(
    scope: Scope, repository: ModelRepository, name: str, version: str | None, body: oip.InferenceRequest,
    max_bytes: int, max_files: int,
) -> Response:  # fmt: skip
    manifest = served(repository, name, version).manifest
    elements = oip.image_elements(body, max_files)
    oip.requested_outputs(body, manifest.kind)  # reject unknown outputs before running the model
    items = elements_to_items(elements, max_bytes)
    unit = served(repository, name, version)
    threshold = oip.threshold_of(body, unit.manifest.labels_threshold)
    outcomes = await unit.classify(items)
    headers = {"X-Model-Name": unit.name, "X-Model-Version": unit.version}
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, ItemError):
            detail = (
                outcome.detail if outcome.detail.startswith(f"Image {i}:") else f"Image {i}: {outcome.detail}"
            )
            return item_error(scope, outcome, headers, detail)
    answers = [o for o in outcomes if not isinstance(o, ItemError)]
    kind = unit.manifest.kind
    pixels = sum(
        a.ids.size for a in answers if isinstance(a, Mask)
    )  # a segmentation's masks, as JSON numbers
    held = repository.budget.hold(oip.MASK_ANSWER_BYTES_PER_PIXEL * pixels, "this request's masks as JSON")
    async with held if pixels else contextlib.nullcontext():
        answer = oip.inference_response(
            unit.name, unit.version, body, answers, kind, len(unit.classes), threshold
        )
        return JSONResponse(answer.model_dump(exclude_none=True), headers=headers)


INFER: dict[str, Any] = {
    "response_model": oip.InferenceResponse,
    "response_model_exclude_none": True,
    "description": "Input `image`: BYTES, shape [N], each element a base64-encoded JPEG, PNG, WebP, GIF or BMP "
    "file. Outputs `probabilities` (FP32 [N, classes], in the order of the model's classes) and `label` "
    "(BYTES [N]); a regression `values`, key points `points`, a segmentation `mask` (UINT8 [N, H, W], the codes "
    "at the uploaded images' size, which must be one) and `shares` (FP32 [N, codes]): see /v2/models/{name}. One bad "
    "image fails the whole request; use /models/{name}/predict/batch for per-file errors.",
    "responses": error_responses(400, 404, 413, 415, 422, 503),
}


@router.post("/models/{name}/infer", summary="Classify base64-encoded image files", **INFER)
@policy(Key.API, Body.V2_JSON, Shape.V2)
async def infer(
    name: ModelName,
    body: oip.InferenceRequest,
    request: Request,
    repository: RepositoryDep,
    settings: SettingsDep,
) -> Response:
    return await infer_with(
        request.scope, repository, name, None, body, settings.max_upload_bytes, settings.max_files
    )


@router.post("/models/{name}/versions/{version}/infer", summary="Classify with this version", **INFER)
@policy(Key.API, Body.V2_JSON, Shape.V2)
async def infer_version(
    name: ModelName,
    version: Version,
    body: oip.InferenceRequest,
    request: Request,
    repository: RepositoryDep,
    settings: SettingsDep,
) -> Response:
    return await infer_with(
        request.scope, repository, name, version, body, settings.max_upload_bytes, settings.max_files
    )
