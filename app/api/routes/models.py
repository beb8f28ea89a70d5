"""What is served: GET /models (every model, loaded or failing), GET /models/{name} and GET /metadata (one
model's manifest and how the server runs it)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RepositoryDep, SettingsDep
from app.api.policy import Key, policy
from app.api.routes.predict import ModelName
from app.api.schemas import MetadataResponse, ModelList, ModelSummary, RuntimeInfo, error_responses
from app.config import Settings
from app.core.errors import CoreError
from app.core.unit import ModelUnit
from training.manifest import library_versions

router = APIRouter(tags=["models"])

LIBRARIES = (
    "learnserve",
    "torch",
    "torchvision",
    "fastai",
    "fasttransform",
    "onnxruntime",
    "pillow",
    "fastapi",
)


def metadata_of(unit: ModelUnit, settings: Settings) -> MetadataResponse:
    facts = unit.backend.describe()
    return MetadataResponse(
        model=unit.manifest.public(),  # every recorded path reduced to its name
        runtime=RuntimeInfo(
            model=unit.name,
            version=unit.version,
            backend=unit.backend.kind,
            device=unit.backend.device,
            threads=facts.get("threads"),
            max_batch_size=unit.limits.max_batch_size,  # after MAX_BATCH_PIXELS
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            max_files=settings.max_files,
            top_k=settings.top_k,
            versions=library_versions(LIBRARIES),
        ),
    )


@router.get(
    "/models", summary="Every model in the repository: version, accuracy, readiness, last reload error"
)
@policy(Key.API)
async def list_models(repository: RepositoryDep) -> ModelList:
    summaries = []
    for name in sorted({*repository.units, *repository.errors}):
        unit = repository.units.get(name)
        manifest = unit.manifest if unit else None
        summaries.append(
            ModelSummary(
                name=name,
                version=unit.version if unit else None,
                arch=manifest.arch if manifest else None,
                kind=manifest.kind if manifest else None,
                classes=len(manifest.classes) if manifest else None,
                accuracy=manifest.metrics.accuracy if manifest and manifest.metrics else None,
                source=manifest.source if manifest else None,
                validated=manifest.validated if manifest else None,
                ready=bool(unit and unit.ready),
                last_reload_error=repository.errors.get(name),
            )
        )
    try:
        default: str | None = repository.default().name
    except CoreError:  # several models and none named, or none loaded
        default = None
    return ModelList(default=default, models=summaries)


@router.get(
    "/models/{name}",
    summary="One model's manifest and runtime facts",
    responses=error_responses(404),
)
@policy(Key.API)
async def model_metadata(
    name: ModelName, repository: RepositoryDep, settings: SettingsDep
) -> MetadataResponse:
    return metadata_of(repository.get(name), settings)


@router.get(
    "/metadata",
    summary="The default model's manifest and the server's runtime settings",
    responses=error_responses(400, 503),
)
@policy(Key.API)
async def metadata(repository: RepositoryDep, settings: SettingsDep) -> MetadataResponse:
    return metadata_of(repository.default(), settings)
