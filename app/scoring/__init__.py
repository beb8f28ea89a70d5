"""Offline batch scoring (`python -m app score`): a folder, a CSV or a list of paths in, one row per input out
(CSV or Parquet), with the server's core: the same unit, decoding, errors and settings. Two engines: `local`
(app/core/files.py's loop, one model copy) and `ray` (Ray Data, one model copy per actor; app/scoring/ray_engine.py).
"""
