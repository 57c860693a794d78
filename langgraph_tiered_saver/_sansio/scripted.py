"""A driver that answers from a script: the saver's operations tested without servers.

As h11 tests its protocol without sockets, an operation here meets a list of expected requests,
each answered with a scripted reply or error. A request of another kind, one a predicate
refuses, or a script left over fails the test with the whole exchange in the message. Every
branch of an op (a fallback, a busy lock, a batch boundary, a timeout, an error mid-way) then
runs in microseconds and deterministically; real-server tests keep one case per fault kind.

    driver = ScriptedDriver([
        Expect(RedisCall, error=TierUnavailableError("redis", "down")),
        Expect(PgCall, reply=[1, 1, 1]),
    ])
    driver.run(op)
    assert driver.unused == []

`Sleep` requests are answered at once (and recorded), unless the script expects them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langgraph_tiered_saver._sansio.io import Op, Request, Sleep, Stepper

T = TypeVar("T")
_NO_REPLY = object()


class ScriptError(AssertionError):
    """The op asked for something the script did not foresee (or left part of it unused)."""


@dataclass
class Expect:
    """One expected request: its kind, an optional check, and the reply or error to give."""

    kind: type
    reply: Any = None
    error: BaseException | None = None
    check: Callable[[Any], bool] | None = None
    describe: str = ""


class ScriptedDriver:
    def __init__(self, script: Sequence[Expect]) -> None:
        self.unused = list(script)
        self.seen: list[Request] = []
        self.slept = 0.0

    def run(self, op: Op[T]) -> T:
        step = Stepper(op)
        while not step.done:
            request = step.request
            assert request is not None
            self.seen.append(request)
            step.feed(*self._answer(request))
        if self.unused:
            raise ScriptError(f"the op ended with {len(self.unused)} expected request(s) unused: {self.unused}")
        return step.value  # type: ignore[return-value]

    def _answer(self, request: Request) -> tuple[bool, Any]:
        if isinstance(request, Sleep) and not (self.unused and self.unused[0].kind is Sleep):
            self.slept += request.seconds
            return True, None
        if not self.unused:
            raise ScriptError(f"unexpected request after the script ended: {_show(request)}")
        expected = self.unused.pop(0)
        if not isinstance(request, expected.kind):
            raise ScriptError(f"expected {expected.kind.__name__} {expected.describe}, got {_show(request)}")
        if expected.check is not None and not expected.check(request):
            raise ScriptError(f"{expected.kind.__name__} {expected.describe!r} refused: {_show(request)}")
        if expected.error is not None:
            return False, expected.error
        return True, expected.reply


def _show(request: Request) -> str:
    text = repr(request)
    return text if len(text) < 300 else text[:300] + "..."


def commands_of(request: Any) -> list[str]:
    """The command names (or script names) of a RedisCall, for checks: ["EVALSHA:put", "ZSCORE"]."""
    names = {script.sha: script.name for script in request.scripts}
    return [f"EVALSHA:{names.get(c[1], '?')}" if c[0] == "EVALSHA" else str(c[0]) for c in request.commands]
