"""Settings, typed and defaulted; every field can be set as an environment variable prefixed LEARNSERVE_."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNSERVE_", extra="ignore")

    model_path: Path = Field(
        Path("models/digits.pkl"),
        description="one exported fastai learner (.pkl) with its .json manifest, served as model NAME (its stem)",
    )
    model_dir: Path | None = Field(
        None,
        description="a model repository: every NAME.pkl with its NAME.json in this folder is served as model "
        "NAME (instead of MODEL_PATH)",
    )
    default_model: str | None = Field(
        None,
        description="the model that answers /predict, /predict/batch and /metadata (default: the only model "
        "served; with several and none named, those routes answer 400 model_required)",
    )
    model_sha256: str | None = Field(
        None, description="optional pin (with MODEL_PATH): refuse to load the .pkl unless it has this sha256"
    )
    watch_seconds: float = Field(
        0.0,
        ge=0,
        description="rescan the model files every N seconds and reload what changed (0: only on SIGHUP or "
        "POST /admin/reload)",
    )
    admin_key: SecretStr | None = Field(
        None,
        description="enables POST /admin/reload for callers that send it (`Authorization: Bearer KEY` or "
        "`X-API-Key: KEY`); separate from API_KEY. Unset: the admin routes do not exist",
    )
    backend: Literal["fastai", "onnx"] = Field(
        "fastai",
        description="the runtime that runs the models: fastai (NAME.pkl) or onnx (NAME.onnx, ONNX Runtime, "
        "without fastai or torch)",
    )
    model_backends: Annotated[dict[str, Literal["fastai", "onnx"]], NoDecode] = Field(
        default_factory=dict,
        description="per-model exceptions to BACKEND, e.g. `digits=onnx,pets=fastai` (in a repository where "
        "both files exist)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available, else CPU")
    max_batch_size: int = Field(32, ge=1, le=1024, description="most images in one forward pass")
    max_batch_pixels: int = Field(
        8 * 224 * 224,
        ge=1,
        description="also caps a batch by its input pixels, bounding activation memory: "
        "8 images at 224 px, MAX_BATCH_SIZE at 64 px",
    )
    max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="how long a batch waits for more requests to join"
    )
    max_queue: int = Field(256, ge=1, description="images waiting for the model before new ones get 503")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest accepted file, in bytes")
    max_pixels: int = Field(
        40_000_000, ge=1, description="largest accepted image, width x height (decompression bombs)"
    )
    max_files: int = Field(64, ge=1, description="most files in one /predict/batch request")
    max_request_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="largest accepted request body for a batch or v2 request (a single upload: MAX_UPLOAD_BYTES)",
    )
    max_v2_request_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1,
        description="largest accepted Open Inference (v2) JSON body: base64 files in JSON cost more to parse "
        "than the same files uploaded, and the parsed body is charged to the memory budget as well",
    )
    min_upload_bytes_per_second: int = Field(
        16 * 1024,
        ge=0,
        description="after its first second, a request body must keep arriving at this average rate, or it gets "
        "408 (0: only BODY_TIMEOUT_SECONDS applies); bodies are charged to the memory budget as they arrive",
    )
    max_inflight_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="memory budget for all requests together: bodies being received, images being decoded "
        "(their working set) and inputs waiting for the model; work beyond it waits, then gets 503",
    )
    memory_wait_seconds: float = Field(
        5.0,
        ge=0,
        description="how long work waits for room in the memory budget before it gets 503 overloaded",
    )
    max_requests: int = Field(
        256,
        ge=1,
        description="requests in progress (headers received, answer not yet sent) before new ones get 503 + "
        "Retry-After; idle and half-open connections do not count",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a connection must send a request's complete headers within this time, or it is closed",
    )
    body_timeout_seconds: float = Field(
        60.0, gt=0, description="a request's body must arrive completely within this time, or it gets 408"
    )
    max_explains: int = Field(
        1,
        ge=1,
        description="explanations (/explain: a forward and a backward pass each) in progress at once before new "
        "ones get 503 + Retry-After",
    )
    top_k: int = Field(
        5, ge=1, le=1000, description="default number of classes in each answer's `top` list (1-1000)"
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads per server process (default: the cores divided among the processes)",
    )
    workers: int | Literal["auto"] = Field(
        "auto",
        description="server processes on the one port, under one supervisor (README: Several processes): a "
        "number, or `auto`: on CPU one per core for small models, else one; on a GPU one per two cores (at most "
        "4); never more than a container's memory limit holds; workers x torch threads never exceed the cores",
    )
    drain_seconds: float = Field(
        20.0, ge=0, description="on SIGTERM, how long in-flight requests may take to finish"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="server log level")
    log_format: Literal["plain", "json"] = Field(
        "plain", description="server log lines: readable text, or one JSON object per line"
    )
    api_key: SecretStr | None = Field(
        None,
        description="when set, prediction and metadata routes need `Authorization: Bearer KEY` or "
        "`X-API-Key: KEY`; health, metrics, docs and the demo page stay open",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed to call the API, comma-separated, e.g. "
        "`https://app.example.com` (none by default; `*` allows any)",
    )

    capture_dir: Path | None = Field(
        None,
        description="turns capture on: uploads the policy keeps (bytes as received, named by sha256) and one JSON "
        "line per answer go here, and POST /feedback records corrections here (off by default: nothing is kept)",
    )
    capture: str = Field(
        "uncertain:0.6",
        description="which answers capture keeps, a comma list: `uncertain:P` (a classifier's top probability "
        "under P), `sample:R` (a random share R of all answers); `sample:1.0` keeps everything",
    )
    capture_max_mb: float = Field(
        1024.0,
        gt=0,
        description="bound on CAPTURE_DIR, in MiB: past it the oldest files are dropped (counted)",
    )
    capture_queue_mb: float = Field(
        64.0,
        gt=0,
        description="uploads waiting for the capture writer, in MiB; past it new captures are dropped (counted), "
        "never waited for",
    )
    capture_remember: int = Field(
        100_000,
        ge=1,
        description="answers remembered by request ID for POST /feedback (older captured ones are looked up in "
        "CAPTURE_DIR's records)",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 64:
            raise ValueError("must be `auto` or a number of processes from 1 to 64")
        return number

    @field_validator("api_key", "admin_key", "model_sha256", "default_model", "capture_dir", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key", "admin_key")
    @classmethod
    def _key_fits_a_header(cls, value: SecretStr | None) -> SecretStr | None:
        key = value.get_secret_value() if value is not None else ""
        if key and not (key.isascii() and key.isprintable() and key == key.strip()):
            raise ValueError(
                "keys are sent in HTTP headers: use printable ASCII without surrounding spaces "
                "(e.g. `openssl rand -hex 32`)"
            )
        return value

    @field_validator("capture")
    @classmethod
    def _capture_policy(cls, value: str) -> str:
        from app.core.capture_policy import CapturePolicy  # numpy: only when settings are validated

        return str(CapturePolicy.parse(value))

    @field_validator("model_backends", mode="before")
    @classmethod
    def _split_backends(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: name=backend,name=backend (or a JSON object)
            if value.lstrip().startswith("{"):
                return json.loads(value)
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"MODEL_BACKENDS must look like name=onnx,other=fastai, not {value!r}")
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: comma-separated, or a JSON list
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        if not isinstance(value, list):
            return value
        origins = [str(v).strip().rstrip("/") for v in value if str(v).strip()]
        for origin in origins:
            if origin != "*" and (
                not origin.startswith(("http://", "https://")) or "/" in origin.split("//", 1)[1]
            ):
                raise ValueError(f"CORS origin {origin!r} must look like https://host[:port], without a path")
        return origins

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """LEARNSERVE_MAX_CONNECTIONS (before idle connections stopped counting) still sets MAX_REQUESTS, with a
        warning, so that an upgraded deployment keeps its limit."""
        old = os.environ.get("LEARNSERVE_MAX_CONNECTIONS")
        if old is not None and isinstance(data, dict) and "max_requests" not in data:
            warnings.warn(
                "LEARNSERVE_MAX_CONNECTIONS is now LEARNSERVE_MAX_REQUESTS (requests in progress; idle "
                "connections no longer count): rename it",
                FutureWarning,
                stacklevel=2,
            )
            data = {**data, "max_requests": old}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_queue < self.max_files:
            raise ValueError(f"max_queue ({self.max_queue}) must be at least max_files ({self.max_files})")
        if self.model_dir is not None and "model_path" in self.model_fields_set:
            raise ValueError(
                "set LEARNSERVE_MODEL_DIR (a folder of models) or LEARNSERVE_MODEL_PATH (one), not both"
            )
        if max(self.max_request_bytes, self.max_single_bytes) > self.max_inflight_bytes:
            raise ValueError(
                "MAX_INFLIGHT_BYTES must hold at least one largest request body (MAX_REQUEST_BYTES, and "
                "MAX_UPLOAD_BYTES + 64 KiB)"
            )
        if self.model_dir is not None and self.model_sha256:
            raise ValueError("LEARNSERVE_MODEL_SHA256 pins one file: use it with LEARNSERVE_MODEL_PATH")
        return self

    def backend_for(self, model: str) -> Literal["fastai", "onnx"]:
        return self.model_backends.get(model, self.backend)

    def model_source(self) -> tuple[Path, Path | None]:
        """(the repository folder, the one file to serve from it or None for every model in it)."""
        if self.model_dir is not None:
            return self.model_dir, None
        return self.model_path.parent, self.model_path

    def batch_size_for(self, input_size: int) -> int:
        """Images per forward pass for a model of this square input size."""
        return max(1, min(self.max_batch_size, self.max_batch_pixels // (input_size * input_size)))

    @property
    def max_single_bytes(self) -> int:
        """Body limit for one upload (POST .../predict): the file plus room for multipart headers."""
        return self.max_upload_bytes + 64 * 1024
