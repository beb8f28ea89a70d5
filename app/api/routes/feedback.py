"""Corrections: POST /feedback names the right label of an answer by its request ID; GET /capture says whether
capture (and so feedback) is on, for the demo page's "wrong? tell us" control.

An answer is found by its `X-Request-ID` among the last CAPTURE_REMEMBER answers in memory, else among the records
on disk (captured answers only: an answer neither remembered nor captured is unknown, 404). Feedback for an answer
whose input was not captured is still recorded: the label alone feeds the disagreement metric.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.capturing import OPT_OUT_HEADER, Capture
from app.api.policy import Body, Key, policy
from app.api.schemas import ErrorResponse
from app.core.capture import Answered
from app.core.errors import CoreError
from app.core.repository import ModelRepository

router = APIRouter(tags=["feedback"])

CORRECT = "correct"
SHOWN_CLASSES = 20  # classes named in a 422's sentence


class CaptureOff(CoreError):
    code = "capture_off"


class UnknownRequest(CoreError):
    code = "unknown_request"


class FeedbackUnsupported(CoreError):
    code = "feedback_unsupported"


class UnknownLabel(CoreError):
    code = "unknown_label"


class CaptureUnavailable(CoreError):
    code = "capture_unavailable"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"request_id": "9f3c0a1e2b4d5f60000000000000002a",
                                                         "label": "cat"}]},
    )  # fmt: skip
    request_id: str = Field(
        min_length=1, max_length=128, description="the answer's X-Request-ID header, as the server sent it"
    )
    label: str = Field(
        min_length=1, max_length=256, description=f"the right class, or `{CORRECT}` when the answer was right"
    )


class FeedbackResponse(BaseModel):
    request_id: str
    model: str
    version: str
    label: str = Field(description="the right class (the answer's own label when the feedback was `correct`)")
    predicted: str = Field(description="the label the model gave")
    agrees: bool
    captured: bool = Field(description="whether the answer's input was captured (harvest can train on it)")


class CaptureStatus(BaseModel):
    enabled: bool
    policy: str | None = Field(None, description="LEARNSERVE_CAPTURE, when capture is on")
    opt_out_header: str = Field(f"{OPT_OUT_HEADER}: off", description="send it and an upload is never kept")


FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in {
        400: "the body is not JSON (code bad_request)",
        401: "missing or wrong API key",
        404: "no answer with this request ID is remembered or captured (code unknown_request)",
        409: "capture is off (capture_off), or the model is not a classifier (feedback_unsupported)",
        408: "the request body did not arrive within BODY_TIMEOUT_SECONDS (code request_timeout)",
        413: "the body is larger than 16 KiB",
        422: "the label is not one of the model's classes (unknown_label), or a malformed body",
        503: "the capture folder cannot be written (capture_unavailable)",
    }.items()
}


async def find(capture: Capture, repository: ModelRepository, request_id: str) -> Answered:
    if (answered := capture.recent.get(request_id)) is not None:
        return answered
    record = await asyncio.get_running_loop().run_in_executor(None, capture.store.find, request_id)
    unit = repository.units.get(record["model"]) if record else None
    if record is None or unit is None:
        raise UnknownRequest(
            f"No answer with request ID {request_id!r} is known: the last {capture.recent.size:,} answers are "
            "remembered, and older ones only if their input was captured."
        )
    answer = record.get("answer") or {}
    return Answered(
        record["model"], record["version"], record["kind"], answer.get("label"), unit.classes, True
    )


@router.post(
    "/feedback",
    summary="Say whether an answer was right, by its request ID",
    description='Send `{"request_id": ..., "label": ...}` with the `X-Request-ID` of a /predict answer and '
    f"the right class, or `{CORRECT}`. Recorded in CAPTURE_DIR/feedback/; `python -m training harvest` turns "
    "captured inputs with feedback into training images.",
    responses=FEEDBACK_ERRORS,
)
@policy(Key.API, Body.SMALL_JSON)
async def feedback(given: FeedbackRequest, request: Request) -> FeedbackResponse:
    capture: Capture | None = request.state.capture
    if capture is None:
        raise CaptureOff("Feedback is recorded only when capture is on (LEARNSERVE_CAPTURE_DIR).")
    answered = await find(capture, request.state.repository, given.request_id)
    if answered.predicted is None:
        raise FeedbackUnsupported(
            f"Feedback takes a class label; {answered.model} is a {answered.kind}, whose answers have none."
        )
    label = answered.predicted if given.label == CORRECT else given.label
    if label not in answered.classes:
        shown = ", ".join(list(answered.classes)[:SHOWN_CLASSES])
        more = (
            f" and {len(answered.classes) - SHOWN_CLASSES} more"
            if len(answered.classes) > SHOWN_CLASSES
            else ""
        )
        raise UnknownLabel(
            f"{given.label!r} is not one of {answered.model}'s classes ({shown}{more}); send one of them, or "
            f"{CORRECT!r}."
        )
    entry = {"request_id": given.request_id, "time": time.time(), "model": answered.model,
             "version": answered.version, "label": label, "predicted": answered.predicted,
             "agrees": label == answered.predicted, "captured": answered.captured}  # fmt: skip
    try:
        await asyncio.get_running_loop().run_in_executor(None, capture.store.append_feedback, entry)
    except OSError as e:
        raise CaptureUnavailable(
            f"The feedback could not be stored ({e.strerror or e}); try again later."
        ) from e
    capture.metrics.feedback_received(answered.model, answered.version, label == answered.predicted)
    return FeedbackResponse(**{k: v for k, v in entry.items() if k != "time"})


@router.get("/capture", summary="Whether capture and feedback are on, and the opt-out header")
@policy(Key.NONE)
async def capture_status(request: Request) -> CaptureStatus:
    capture: Capture | None = request.state.capture
    return CaptureStatus(enabled=capture is not None, policy=str(capture.policy) if capture else None)
