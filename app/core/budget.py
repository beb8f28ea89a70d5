"""The memory budget: how many bytes all requests together may hold at once, whatever they send.

Charged: request bodies as they arrive, each image while it is decoded (its working set, estimated from the
header before any pixel is decoded) and each model-sized input while it waits for or runs in a batch. Work that
does not fit waits, in arrival order, up to `wait_seconds`, then gets Overloaded (503 + Retry-After); a single
charge that could never fit gets OverBudget (413). One budget per process, shared by every model.

All methods run on the event loop (no locks needed); threads never touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar

from app.core.errors import OverBudget, Overloaded
from app.core.trim import TRIM_AFTER_BYTES, trim

# What the current request holds, when it runs inside `request_scope` (a cell shared with the tasks it starts).
_holding: ContextVar[list[int] | None] = ContextVar("learnserve_request_holding", default=None)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """Count what one request holds (its body, then its images) so that a charge it could never get beside its own
    holdings is refused at once (413) rather than waiting for room that only it could free (503, forever)."""
    if _holding.get() is not None:  # already inside one (a route inside BodyGuard's): keep counting there
        yield
        return
    token = _holding.set([0])
    try:
        yield
    finally:
        _holding.reset(token)


class MemoryBudget:
    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self.peak = 0
        self._held_since_trim = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _try_take(self, n: int) -> bool:
        """Take `n` bytes now if they fit and nobody is waiting ahead."""
        if n <= self.limit - self.in_use and not self._waiters:
            self._take(n)
            return True
        return False

    async def acquire(self, n: int, what: str = "this request") -> None:
        """Take `n` bytes, waiting up to `wait_seconds` for room."""
        cell = _holding.get()
        mine = cell[0] if cell else 0
        if n + mine > self.limit:
            beside = f", beside the {mine / 2**20:,.1f} MiB its request already holds" if mine else ""
            raise OverBudget(
                f"{what.capitalize()} needs {n / 2**20:,.1f} MiB of memory at once{beside}; the server's budget "
                f"for all requests together is {self.limit / 2**20:,.0f} MiB (LEARNSERVE_MAX_INFLIGHT_BYTES)."
            )
        if self._try_take(n):
            if cell:
                cell[0] += n
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.wait_seconds)
        except TimeoutError:
            if future.done():  # granted just as the wait ran out: keep it
                if cell:
                    cell[0] += n
                return
            self._waiters.remove(entry)
            self._wake()
            raise Overloaded(
                f"The server is busy: {(self.in_use - mine) / 2**20:,.0f} MiB of its {self.limit / 2**20:,.0f} MiB memory "
                "budget are in use by other requests; retry shortly."
            ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._give_back(n)  # granted, but the caller went away (never counted as the request's)
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            raise
        if cell:
            cell[0] += n

    def release(self, n: int) -> None:
        """Give back `n` bytes taken by `acquire` (in the same request)."""
        if cell := _holding.get():
            cell[0] -= n
        self._give_back(n)

    def _give_back(self, n: int) -> None:
        self.in_use -= n
        self._wake()
        if self.in_use == 0 and self._held_since_trim >= TRIM_AFTER_BYTES:
            self._held_since_trim = 0  # a burst is over: hand its memory back (off the event loop)
            asyncio.get_running_loop().run_in_executor(None, trim)

    @contextlib.asynccontextmanager
    async def hold(self, n: int, what: str = "this request") -> AsyncIterator[None]:
        await self.acquire(n, what)
        try:
            yield
        finally:
            self.release(n)

    def _take(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)
        self._held_since_trim = max(self._held_since_trim, self.in_use)

    def _wake(self) -> None:
        """Grant waiters in arrival order while the first one fits."""
        while self._waiters and self._waiters[0][0] <= self.limit - self.in_use:
            n, future = self._waiters.popleft()
            if not future.done():
                self._take(n)
                future.set_result(None)
