"""Settings, typed and defaulted; every field can be set as an environment variable prefixed LEARNSERVE_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNSERVE_", extra="ignore")

    model_path: Path = Field(
        Path("models/digits.pkl"), description="exported fastai learner (.pkl) with its .json manifest"
    )
    model_sha256: str | None = Field(
        None, description="optional pin: refuse to start unless the .pkl has this sha256"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available, else CPU")
    max_batch_size: int = Field(32, ge=1, le=1024, description="most images in one forward pass")
    max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="how long a batch waits for more requests to join"
    )
    max_queue: int = Field(256, ge=1, description="images waiting for the model before new ones get 503")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest accepted file, in bytes")
    max_pixels: int = Field(
        40_000_000, ge=1, description="largest accepted image, width x height (decompression bombs)"
    )
    max_files: int = Field(64, ge=1, description="most files in one /predict/batch request")
    top_k: int = Field(5, ge=1, description="default number of classes in each answer's `top` list")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads (default: torch's choice)"
    )
    drain_seconds: float = Field(
        20.0, ge=0, description="on SIGTERM, how long in-flight requests may take to finish"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="server log level")

    @model_validator(mode="after")
    def _queue_holds_a_full_batch(self) -> Settings:
        if self.max_queue < self.max_files:
            raise ValueError(f"max_queue ({self.max_queue}) must be at least max_files ({self.max_files})")
        return self

    @property
    def max_request_bytes(self) -> int:
        """Body limit for a batch upload: every file at its limit plus room for multipart headers."""
        return self.max_files * (self.max_upload_bytes + 16 * 1024)
