"""A minimal batching server, the sketch learnserve must not be slower than: one `queue.Queue`, one model thread
that takes whatever is queued as the next batch, decodes on that thread with the learner's own pipelines, and
answers a dict. No limits, metrics, request IDs, keys or error handling.
Run: MODEL=models/x.pkl uvicorn bench.minimal_server:app --no-access-log --port 8003
"""

import asyncio
import os
import queue
import threading
from typing import Annotated, Any

import torch
from fastai.learner import load_learner
from fastai.vision.core import PILImage
from fastapi import FastAPI, File, UploadFile

learn = load_learner(os.environ["MODEL"])
model = learn.model.eval()
item_tfms, batch_tfms = learn.dls.valid.after_item, learn.dls.valid.after_batch
item_tfms.split_idx = batch_tfms.split_idx = 1
vocab = list(learn.dls.vocab)
jobs: queue.Queue[tuple[bytes, asyncio.Future[Any], asyncio.AbstractEventLoop]] = queue.Queue()


def worker() -> None:
    while True:
        batch = [jobs.get()]
        while len(batch) < 32:
            try:
                batch.append(jobs.get_nowait())
            except queue.Empty:
                break
        with torch.inference_mode():
            x = torch.stack([item_tfms(PILImage.create(data)) for data, _, _ in batch])
            probs = torch.softmax(model(batch_tfms(x).as_subclass(torch.Tensor)), dim=1)
        for (_, future, loop), row in zip(batch, probs.tolist(), strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            loop.call_soon_threadsafe(future.set_result, {"label": vocab[best], "probability": row[best]})


threading.Thread(target=worker, daemon=True).start()
app = FastAPI()


@app.post("/predict")
async def predict(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    jobs.put((await file.read(), future, loop))
    return await future  # type: ignore[no-any-return]
