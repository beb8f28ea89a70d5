"""The server's log handler writes on a QueueListener thread: flush and close write everything queued before them."""

from __future__ import annotations

import io
import logging
import threading

from app.api.logs import BackgroundStderr


def test_flush_and_close_write_everything_queued_in_order() -> None:
    out = io.StringIO()
    handler = BackgroundStderr(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger("learnserve.writer-test")
    logger.addHandler(handler)
    writers = [
        threading.Thread(target=lambda i=i: [logger.info("t%d-%03d", i, n) for n in range(200)])
        for i in range(4)
    ]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    handler.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 800
    for i in range(4):
        assert [x for x in lines if x.startswith(f"t{i}-")] == [f"t{i}-{n:03d}" for n in range(200)]
    logger.info("last")  # after a flush the listener listens again
    handler.close()
    assert out.getvalue().splitlines()[-1] == "last"
    handler.close()  # twice is harmless (atexit and logging.shutdown both close it)
