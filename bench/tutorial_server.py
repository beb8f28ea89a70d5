"""The baseline users write themselves: FastAPI + `learn.predict` per request (the shape of the popular tutorials).

Kept honest rather than naive: fastai's progress bar is silenced (it would print per request) and the model loads
once. Run: MODEL=models/x.pkl uvicorn bench.tutorial_server:app --port 8001
"""

import os
from typing import Annotated

from fastai.learner import load_learner
from fastai.vision.core import PILImage
from fastapi import FastAPI, File, UploadFile

learn = load_learner(os.environ["MODEL"])
app = FastAPI()


@app.post("/predict")
async def predict(file: Annotated[UploadFile, File()]) -> dict[str, object]:
    img = PILImage.create(await file.read())
    with learn.no_bar():
        label, idx, probs = learn.predict(img)
    return {"label": str(label), "probability": float(probs[idx])}
