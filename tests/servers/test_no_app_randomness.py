"""The saver draws its tokens (locks, flush leases, the epoch, worker ids) and version
tiebreaks from its own generators, never from `uuid.uuid4` or the global `random`: an
application that seeds or mocks them (LangGraph's own tests mock uuid4 for deterministic ids)
sees the same sequence with this saver as without it. (psycopg_pool draws jitter from the
global `random` on its own threads; that is the pool's, not the saver's.)"""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

import langgraph_tiered_saver
from langgraph_tiered_saver.flushing.fleet import new_worker_id
from tests.helpers import thread_config

LIBRARY = str(Path(langgraph_tiered_saver.__file__).parent)
DRAWS = ("random", "getrandbits", "randint", "randrange", "uniform", "choice", "choices", "shuffle", "sample", "randbytes")


def test_saver_calls_leave_uuid4_and_random_alone(saver_context: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    callers: list[str] = []

    def watched(real: Callable[..., Any], name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(LIBRARY):
                callers.append(f"{name} from {caller}")
            return real(*args, **kwargs)

        return call

    with saver_context(durable=True) as saver:
        saver.setup()
        cfg = thread_config()
        checkpoint = empty_checkpoint()
        monkeypatch.setattr(uuid, "uuid4", watched(uuid.uuid4, "uuid4"))
        for name in DRAWS:
            monkeypatch.setattr(random, name, watched(getattr(random, name), name))
        cfg2 = saver.put(cfg, checkpoint, {"step": -1}, {"a": saver.get_next_version(None, None)})
        saver.put_writes(cfg2, [("a", 1)], "task-1")
        with saver.thread_lock(cfg, timeout=5):
            pass
        saver.flush()  # flush lease and lock tokens
        assert saver.get_tuple(cfg) is not None
        new_worker_id()
    assert callers == []
