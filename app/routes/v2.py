"""The Open Inference Protocol's REST endpoints under /v2, for KServe, Triton clients and other v2 tooling.

Inference takes the same path as /predict (decode_image in the thread pool, then the batcher). Errors answer
`{"error": "..."}` as the protocol asks, with the same statuses as the rest of the API.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app import open_inference as oip
from app.deps import ServiceDep
from app.errors import ApiError, NotReady
from app.handlers import describe_validation
from app.imaging import decode_image
from app.security import ApiKeyGuard
from app.service import Service

BINARY_UNSUPPORTED = (
    "Binary tensor data is not supported: send BYTES elements as base64 strings in the JSON body "
    "(tritonclient: set_data_from_numpy(..., binary_data=False))."
)


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class V2Route(APIRoute):
    """Answers errors in the protocol's shape, and reads every body as JSON whatever its Content-Type says
    (tritonclient sends none, `curl -d` sends form-urlencoded)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_v2(request: Request) -> Response:
            raw = request.scope["headers"]
            if any(k == b"inference-header-content-length" for k, _ in raw):
                return v2_error(400, BINARY_UNSUPPORTED)
            headers = [(k, v) for k, v in raw if k != b"content-type"]
            request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
            try:
                return await handle(request)
            except ApiError as e:
                return v2_error(e.status, e.detail, e.headers())
            except RequestValidationError as e:
                return v2_error(400, describe_invalid(e))

        return handle_v2


def describe_invalid(exc: RequestValidationError) -> str:
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"The request body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})."
    return describe_validation(exc)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": oip.ErrorV2} for s in statuses}


router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=V2Route)


def served(service: Service, name: str) -> Service:
    if name != service.model_name:
        raise oip.ModelNotFound(f"There is no model {name!r}; this server serves {service.model_name!r}.")
    return service


def require_ready(service: Service) -> None:
    if not service.status.accepting:
        raise NotReady("The server is shutting down." if service.status.draining else "The model is loading.")


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> oip.ServerMetadata:
    return oip.ServerMetadata(name="learnserve", version=request.app.version, extensions=[])


@router.get("/health/live", summary="The server answers")
async def server_live() -> oip.Live:
    return oip.Live(live=True)


@router.get("/health/ready", summary="The server can infer", responses=error_responses(503))
async def server_ready(service: ServiceDep) -> oip.Ready:
    require_ready(service)
    return oip.Ready(ready=True)


@router.get("/models/{name}/ready", summary="The model can infer", responses=error_responses(404, 503))
async def model_ready(name: str, service: ServiceDep) -> oip.ModelReady:
    require_ready(served(service, name))
    return oip.ModelReady(name=name, ready=True)


@router.get(
    "/models/{name}",
    summary="Model metadata: its input and output tensors",
    dependencies=[ApiKeyGuard],
    response_model_exclude_none=True,
    responses=error_responses(401, 404),
)
async def model_metadata(name: str, service: ServiceDep) -> oip.ModelMetadata:
    served(service, name)
    return oip.model_metadata(name, service.predictor.classes)


def decode_each(elements: list[str], max_bytes: int, max_pixels: int) -> list[Image.Image]:
    """base64 -> file bytes -> a safe RGB image, in the thread pool: the same decode_image as /predict."""
    images = []
    for i, element in enumerate(elements):
        data = oip.decode_element(i, element, max_bytes)
        try:
            images.append(decode_image(data, max_pixels))
        except ApiError as e:
            raise type(e)(f"Image {i}: {e.detail}") from None
    return images


@router.post(
    "/models/{name}/infer",
    summary="Classify base64-encoded image files",
    description="Input `image`: BYTES, shape [N], each element a base64-encoded JPEG, PNG, WebP, GIF or BMP "
    "file. Outputs `probabilities` (FP32 [N, classes], in the order of /metadata's classes) and `label` "
    "(BYTES [N]). One bad image fails the whole request; use /predict/batch for per-file errors.",
    dependencies=[ApiKeyGuard],
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
)
async def infer(name: str, body: oip.InferenceRequest, service: ServiceDep) -> oip.InferenceResponse:
    served(service, name)
    settings = service.settings
    elements = oip.image_elements(body, settings.max_files)
    oip.requested_outputs(body)  # reject unknown outputs before running the model
    with service.batcher.expecting(len(elements)):  # as /predict does: a forming batch waits for these
        images = await run_in_threadpool(
            decode_each, elements, settings.max_upload_bytes, settings.max_pixels
        )
    predictions = await service.batcher.submit(images)
    return oip.inference_response(name, body, predictions, len(service.predictor.classes))
