"""What the lifespan builds and the routes use: the predictor, its batcher, and the service's readiness."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.batcher import Batcher
from app.config import Settings
from app.predictor import Predictor


@dataclass
class ServiceStatus:
    """Ready once the model is loaded and warm; draining from SIGTERM on (readiness then answers 503)."""

    ready: bool = False
    draining: bool = False
    load_seconds: float = 0.0

    def begin_drain(self) -> None:
        self.draining = True

    @property
    def accepting(self) -> bool:
        return self.ready and not self.draining


@dataclass
class Service:
    settings: Settings
    predictor: Predictor
    batcher: Batcher
    status: ServiceStatus = field(default_factory=ServiceStatus)

    @property
    def model_name(self) -> str:
        """The manifest's name, or the file's stem for a learner exported without one."""
        manifest = self.predictor.manifest
        return manifest.name if manifest else self.settings.model_path.stem
