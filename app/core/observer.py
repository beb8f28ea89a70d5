"""What the core reports as it works. The HTTP edge's Prometheus metrics implement it; the command lines pass
nothing. Every method is called on the event loop and must be cheap."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.core.unit import ModelUnit


class Observer(Protocol):
    def batch_done(self, model: str, size: int, seconds: float) -> None: ...

    def predicted(self, model: str, labels: Iterable[str]) -> None:
        """The labels given (a multi-label image gives those over its threshold: none, one or several)."""

    def model_loaded(self, unit: ModelUnit) -> None: ...

    def model_unloaded(self, model: str) -> None: ...

    def load_failed(self, model: str, error: str) -> None: ...
