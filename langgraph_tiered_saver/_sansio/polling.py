"""Waiting for something in Redis, without I/O: one poll loop for every wait of the saver
(a flush lock, a thread lock, a checkpoint put still in flight).

The wait is measured by the sleeps it yields, not by a clock: the same op then behaves the same
under any driver (a scripted test driver answers a `Sleep` at once), and a real wait lasts at
least `timeout` seconds (plus the round trips in between). Sleeps double from `first` up to
`longest`, so a short wait reacts in a millisecond and a long one does not hammer Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from langgraph_tiered_saver._sansio.io import Op, Sleep

T = TypeVar("T")


def poll_op(
    attempt: Callable[[], Op[T | None]], *, timeout: float | None, first: float = 0.001, longest: float = 0.05
) -> Op[T | None]:
    """Run `attempt` until it returns something other than None; None once `timeout` seconds
    of sleeping passed (`timeout` 0: one attempt; None: no limit)."""
    waited, delay = 0.0, first
    while True:
        result = yield from attempt()
        if result is not None:
            return result
        if timeout is not None and waited >= timeout:
            return None
        yield Sleep(delay)
        waited += delay
        delay = min(longest, delay * 2)
