"""Which answers capture keeps: LEARNSERVE_CAPTURE, a comma list of `uncertain:P` and `sample:R`.

`uncertain:0.6` keeps a single-label answer whose top probability is under 0.6, and a multi-label answer with any
label within 0.6 - 0.5 = 0.1 of its threshold (a label the model was as unsure of as a 60/40 call); `sample:0.01`
keeps a random 1% of every answer; both together keep either. Regression and key-point answers carry no
probability, so only `sample` applies to them. Deciding costs a comparison and, with `sample`, one random draw: it
runs on the event loop for every answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from app.core.prediction import Answer, Prediction

UNCERTAIN = "uncertain"
SAMPLE = "sample"


@dataclass(frozen=True, slots=True)
class CapturePolicy:
    uncertain: float | None = None  # keep a classifier's answer whose top probability is under this
    sample: float = 0.0  # keep this share of every answer, at random

    @classmethod
    def parse(cls, text: str) -> CapturePolicy:
        """`uncertain:0.6,sample:0.01`; raises ValueError with a sentence on anything else."""
        uncertain: float | None = None
        sample = 0.0
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, _, value = part.partition(":")
            try:
                x = float(value)
            except ValueError:
                raise ValueError(f"{part!r}: expected uncertain:P or sample:R with a number") from None
            if not 0 <= x <= 1:
                raise ValueError(f"{part!r}: the number must be between 0 and 1")
            if name.strip() == UNCERTAIN:
                uncertain = x
            elif name.strip() == SAMPLE:
                sample = x
            else:
                raise ValueError(
                    f"{part!r}: the parts are uncertain:P and sample:R, e.g. uncertain:0.6,sample:0.01"
                )
        if uncertain is None and not sample:
            raise ValueError(f"{text!r} keeps nothing: use e.g. uncertain:0.6, sample:0.01 or sample:1.0")
        return cls(uncertain, sample)

    def reason(self, answer: Answer, threshold: float | None = None) -> str | None:
        """Why this answer is kept (`uncertain` or `sample`), or None. `threshold`: a multi-label model's."""
        if self.uncertain is not None and isinstance(answer, Prediction):
            if threshold is None:
                if answer.probability < self.uncertain:
                    return UNCERTAIN
            elif any(abs(p - threshold) < self.uncertain - 0.5 for p in answer.probabilities):
                return UNCERTAIN
        if self.sample and (self.sample >= 1 or random.random() < self.sample):
            return SAMPLE
        return None

    def __str__(self) -> str:
        parts = [f"{UNCERTAIN}:{self.uncertain:g}"] if self.uncertain is not None else []
        return ",".join([*parts, f"{SAMPLE}:{self.sample:g}"] if self.sample else parts)
