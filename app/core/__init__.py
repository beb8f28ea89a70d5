"""The core: decoding, backends, the dynamic batcher, one unit per served model, the model repository and the
file-scoring loop. It knows nothing of HTTP (no FastAPI or Starlette import): the server, the command lines and
the benchmark all call it."""
