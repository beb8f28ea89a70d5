"""What is served: GET /models (every model, loaded or failing), GET /models/{name} and GET /metadata (one
model's manifest and how the server runs it)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from fastapi import APIRouter

from app.api.deps import RepositoryDep, SettingsDep
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


def public_manifest(unit: ModelUnit) -> dict[str, Any]:
    """The manifest as published: the training data's location is reduced to its folder's name."""
    manifest = unit.manifest.model_dump(mode="json")
    source = (manifest.get("dataset") or {}).get("source")  # imported without --data: no dataset
    if isinstance(source, str):
        manifest["dataset"]["source"] = PurePath(source).name or source
    return manifest


def metadata_of(unit: ModelUnit, settings: Settings) -> MetadataResponse:
    facts = unit.backend.describe()
    return MetadataResponse(
        model=public_manifest(unit),
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
async def model_metadata(
    name: ModelName, repository: RepositoryDep, settings: SettingsDep
) -> MetadataResponse:
    return metadata_of(repository.get(name), settings)


@router.get(
    "/metadata",
    summary="The default model's manifest and the server's runtime settings",
    responses=error_responses(400, 503),
)
async def metadata(repository: RepositoryDep, settings: SettingsDep) -> MetadataResponse:
    return metadata_of(repository.default(), settings)
