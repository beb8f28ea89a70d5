"""What the training CLI tells its user when something is wrong (an error) or doubtful (a warning): one line each."""

import os
import sys


class TrainingError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


def warn(message: str) -> None:
    """A one-line `warning: ...` on stderr: the run goes on, but the user should know. Under torchrun only rank 0
    says it (every rank sees the same data and figures)."""
    if int(os.environ.get("RANK") or 0) == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)
