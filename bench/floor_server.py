"""The HTTP floor: a bare FastAPI endpoint that reads the same multipart upload and returns a constant answer.

No model, no decoding: what one uvicorn process on these cores can do at best with this HTTP stack.
Run: uvicorn bench.floor_server:app --no-access-log --port 8002
"""

from typing import Annotated

from fastapi import FastAPI, File, UploadFile

app = FastAPI()
ANSWER = {"label": "7", "probability": 1.0}


@app.post("/predict")
async def predict(file: Annotated[UploadFile, File()]) -> dict[str, object]:
    await file.read()
    return ANSWER
