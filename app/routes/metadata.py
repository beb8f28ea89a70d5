"""GET /metadata: what model this is and how the server runs it."""

from __future__ import annotations

import torch
from fastapi import APIRouter

from app.deps import ServiceDep
from app.schemas import MetadataResponse, RuntimeInfo
from training.manifest import library_versions

router = APIRouter(tags=["metadata"])

LIBRARIES = ("learnserve", "torch", "torchvision", "fastai", "fastcore", "fasttransform", "pillow", "fastapi")


@router.get("/metadata", summary="The model's manifest and the server's runtime settings")
async def metadata(service: ServiceDep) -> MetadataResponse:
    s = service.settings
    manifest = service.predictor.manifest
    return MetadataResponse(
        model=manifest.model_dump(mode="json") if manifest else {"classes": service.predictor.classes},
        runtime=RuntimeInfo(
            device=str(service.predictor.device),
            max_batch_size=service.batcher.max_batch_size,  # after MAX_BATCH_PIXELS
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            max_upload_bytes=s.max_upload_bytes,
            max_pixels=s.max_pixels,
            max_files=s.max_files,
            top_k=s.top_k,
            torch_threads=torch.get_num_threads(),
            versions=library_versions(LIBRARIES),
        ),
    )
