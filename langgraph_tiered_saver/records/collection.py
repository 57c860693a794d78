"""The cyclic garbage collector held off while a long list or DeltaChannel history is decoded.

Decoding a thread's history creates many long-lived objects (LangGraph's `get_state_history`
takes the whole `list` at once: ~84,000 messages for 500 checkpoints of a chat) and no garbage
cycles. Each young collection promotes them, and every time the promoted objects reach a quarter
of the heap the collector makes a full pass over all of it: four or five passes per call, half
of the call's time, collecting nothing. Held off for the decoding alone (no I/O, no await), the
collector then finds the new objects once, as it would any others.

Process-wide and nesting-safe: the first of concurrent decodings turns the collector off, the
last one turns it back on, and a collector that was already off (the application's choice) is
left off. Turning it off or on from another thread while a decoding runs is not detected: the
last decoding to finish turns it back on.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0  # decodings under way
_turned_off = False  # whether the first of them turned the collector off (the last turns it on)


@contextmanager
def collector_held() -> Iterator[None]:
    """Hold off cyclic garbage collection for the block (see the module docstring)."""
    global _holders, _turned_off
    with _lock:
        if _holders == 0:
            _turned_off = gc.isenabled()
            if _turned_off:
                gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _turned_off:
                _turned_off = False
                gc.enable()
