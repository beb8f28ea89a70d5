"""The memory budget on its own: waiting in arrival order, 503 after the wait, 413 for what can never fit (alone or
beside what its own request holds), and consistent counts when waiters give up or are cancelled."""

from __future__ import annotations

import asyncio

import pytest

from app.core.budget import MemoryBudget, _holding, request_scope
from app.core.errors import OverBudget, Overloaded


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_waiters_are_granted_in_arrival_order_and_time_out_with_overloaded() -> None:
    async def main() -> None:
        budget = MemoryBudget(100, wait_seconds=0.2)
        await budget.acquire(80)
        order: list[str] = []

        async def take(name: str, n: int) -> None:
            await budget.acquire(n)
            order.append(name)

        first = asyncio.create_task(take("first", 50))
        await asyncio.sleep(0)
        second = asyncio.create_task(take("second", 10))  # would fit now, but waits behind the first
        await asyncio.sleep(0.05)
        assert order == []
        budget.release(80)
        await asyncio.gather(first, second)
        assert order == ["first", "second"]
        assert budget.in_use == 60
        with pytest.raises(Overloaded, match="in use by other requests"):
            await budget.acquire(50)
        budget.release(60)
        assert budget.in_use == 0
        with pytest.raises(OverBudget, match="MAX_INFLIGHT_BYTES"):
            await budget.acquire(101)

    run(main())


def test_a_request_is_refused_what_it_could_only_get_by_freeing_its_own_holdings() -> None:
    async def main() -> None:
        budget = MemoryBudget(100, wait_seconds=5.0)
        with request_scope():
            await budget.acquire(60, "this request's body")
            with pytest.raises(OverBudget, match="beside the"):
                await budget.acquire(50, "this image")  # at once, not after 5 s of waiting
            await budget.acquire(40, "this image")
            budget.release(40)
            budget.release(60)
            assert _holding.get() == [0]
        assert budget.in_use == 0

        async def other_request() -> None:
            with request_scope():
                await budget.acquire(30)
                await asyncio.sleep(0.05)
                budget.release(30)

        task = asyncio.create_task(other_request())  # started outside this request: a request of its own
        await asyncio.sleep(0.01)
        with request_scope():  # room held by *another* request is worth waiting for
            await budget.acquire(60)
            await budget.acquire(40)  # waits for the other request, then fits
            await task
            budget.release(100)
        assert budget.in_use == 0
        with request_scope():
            await budget.acquire(30)
            # a nested scope (the unit's, inside BodyGuard's) keeps counting in the outer one
            with request_scope(), pytest.raises(OverBudget, match="beside the"):
                await budget.acquire(80)
            budget.release(30)

    run(main())


def test_a_cancelled_waiter_leaves_the_counts_as_they_were() -> None:
    async def main() -> None:
        budget = MemoryBudget(100, wait_seconds=5.0)
        await budget.acquire(90)
        seen: list[list[int] | None] = []

        async def waiter() -> None:
            with request_scope():
                try:
                    await budget.acquire(50)
                finally:
                    seen.append(_holding.get())

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        budget.release(90)  # grants the waiter...
        task.cancel()  # ...which is cancelled before it runs again
        try:
            await task
            granted = 50  # Python 3.11's wait_for keeps a result that arrived with the cancel
        except asyncio.CancelledError:
            granted = 0  # given back, and never counted as the request's
        assert budget.in_use == granted
        assert seen == [[granted]]
        budget.release(granted)

        await budget.acquire(90)
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        task.cancel()  # cancelled first...
        budget.release(90)  # ...then granted before it runs again: given back, never counted as the request's
        with pytest.raises(asyncio.CancelledError):
            await task
        assert budget.in_use == 0
        assert seen[-1] == [0]

        task = asyncio.create_task(waiter())  # cancelled while still waiting
        await budget.acquire(90)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        budget.release(90)
        assert budget.in_use == 0
        assert budget._waiters == deque_empty()

    run(main())


def deque_empty():  # type: ignore[no-untyped-def]
    from collections import deque

    return deque()
