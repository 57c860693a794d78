"""Decoded values kept across calls, for reads that repeat with the same bytes: the seed of a
DeltaChannel, which each turn of a conversation reads again until the next snapshot (every
`snapshot_frequency` updates), with the writes appended since; and the channel values and
pending writes of a checkpoint read more than once (`get_tuple` of a thread whose channels did
not all change since the last read). A long conversation's seed holds the whole message list
(hundreds of KB, often offloaded to the blob store), so without this each turn fetches it and
deserializes every message again. Deserializing messages (pydantic validation of each) costs
about 4x a pickle copy.

Seeds are kept on their first read (`put`). Other values only on their second (`load`): a
value read once, like most of a conversation's, costs no pickle and takes no room; and only
when a copy is cheaper than decoding, which it is not for plain data (dicts, lists and strings
decode from msgpack faster than pickle copies them): such a value is marked plain and always
decoded.

A DeltaChannel's writes come back every turn in the same order, the turn's new ones last: they
are also kept as runs (`run_copies`), a pickle of several values at once, since a pickle
round trip pays per pickle for finding each class again: 100 writes of one message each copy in
~0.3 ms from runs of 4, ~0.6 ms one by one. A run is used only where the writes asked for equal
the run's stored bytes, value by value, in order; the turn's new writes become a new run.

Entries are keyed by the tenant and the stored (type, bytes) pair: the value's own bytes, or the
pointer of an offloaded value, which names its content by hash. Equal keys are equal content, so
an entry is never stale. A hit returns an independent copy (a pickle round trip of the first
decoded value, as `DecodeOnce`), never a shared object. The entries of a tenant go with its
erasure; the total is bounded (`limit` bytes of keys and copies, least recently used first out;
runs, half as much again: a conversation of 500 one-message writes keeps ~350 KB of them).
"""

from __future__ import annotations

import pickle  # copies of values this process decoded, never foreign bytes
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph_tiered_saver.records.codec import TypedValue

DEFAULT_LIMIT = 32 * 1024 * 1024
# Below this many stored bytes the serializer decodes as fast as a copy: not worth an entry.
MIN_BYTES = 128
# Values read once or found plain, remembered by hash (all forgotten at once when there are
# this many): a bound on memory, not on correctness (a hash that collides only admits a value
# one read early, or decodes it where a copy would do).
MARKS_LIMIT = 16_384
_ONCE, _PLAIN = 1, 2
# A copy must beat decoding by this much (an entry's lookup and LRU upkeep) to be kept.
COPY_OVERHEAD_SECONDS = 0.5e-6

Key = tuple[str, str, bytes]


# Runs kept per sequence (a thread's channel), at most: past it, the runs merge into one.
MAX_RUNS = 16
RUN_SEQUENCES = 256  # sequences whose runs are kept, least recently used out


@dataclass(frozen=True)
class _Run:
    """Stored values, in order, one pickle of the list of the values they decoded to, and the
    bytes both take (counted once, when the run is made)."""

    typed: tuple[TypedValue, ...]
    copy: bytes
    size: int


def _run(typed: tuple[TypedValue, ...], copy: bytes) -> _Run:
    return _Run(typed, copy, len(copy) + sum(len(t[0]) + len(t[1]) for t in typed))


class DecodedValues:
    """A bounded LRU of decoded values as pickles, by (tenant, type, stored bytes), and of runs
    of values read in the same order again (`run_copies`)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, bytes] = OrderedDict()
        self._size = 0
        self._marks: dict[int, int] = {}  # hash of a key -> _ONCE or _PLAIN
        self._runs: OrderedDict[tuple[str, ...], list[_Run]] = OrderedDict()  # (tenant, ...) -> runs
        self._runs_size = 0
        self.runs_limit = limit // 2

    def run_copies(
        self, sequence: tuple[str, ...], typed_values: list[TypedValue], decode: Callable[[TypedValue], Any]
    ) -> list[Any]:
        """The values of `typed_values`, a sequence read again in the same order (`sequence`: the
        tenant first, then what names it), each an independent object: copies of the runs kept
        for the sequence as far as they match it, the rest `decode`d and kept as a new run,
        pickled before any of them is handed out."""
        with self._lock:
            runs = self._runs.get(sequence, [])
            if runs:
                self._runs.move_to_end(sequence)
        out: list[Any] = []
        used: list[_Run] = []
        for run in runs:
            n = len(run.typed)
            if len(out) + n > len(typed_values) or tuple(typed_values[len(out) : len(out) + n]) != run.typed:
                break
            out += pickle.loads(run.copy)  # our own bytes
            used.append(run)
        rest = typed_values[len(out) :]
        if not rest:  # an older point of the sequence (time travel): the runs past it go
            if len(used) < len(runs):
                self._keep_runs(sequence, used)
            return out
        fresh = [decode(typed) for typed in rest]
        if len(used) + 1 > MAX_RUNS:  # merged: nothing of it has been handed out yet
            kept = [_run(tuple(typed_values), copy)] if (copy := _pickled(out + fresh)) is not None else []
        else:
            kept = [*used, _run(tuple(rest), copy)] if (copy := _pickled(fresh)) is not None else used
        self._keep_runs(sequence, kept)
        return out + fresh

    def _keep_runs(self, sequence: tuple[str, ...], runs: list[_Run]) -> None:
        with self._lock:
            old = self._runs.pop(sequence, None)
            if old is not None:
                self._runs_size -= sum(r.size for r in old)
            size = sum(r.size for r in runs)
            if runs and size <= self.runs_limit:
                self._runs[sequence] = runs
                self._runs_size += size
            while self._runs and (len(self._runs) > RUN_SEQUENCES or self._runs_size > self.runs_limit):
                _, evicted = self._runs.popitem(last=False)
                self._runs_size -= sum(r.size for r in evicted)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tenant: str, typed: TypedValue) -> tuple[bool, Any]:
        """(True, a fresh copy) for a value seen before, else (False, None)."""
        key = (tenant, typed[0], typed[1])
        with self._lock:
            copy = self._entries.get(key)
            if copy is None:
                return False, None
            self._entries.move_to_end(key)
        return True, pickle.loads(copy)  # our own bytes

    def seen_again(self, tenant: str, typed: TypedValue) -> bool:
        """Whether `typed` was read before (and is worth keeping): True on its second read."""
        if len(typed[1]) < MIN_BYTES:
            return False
        mark = hash((tenant, typed[0], typed[1]))
        with self._lock:
            if self._marks.get(mark) == _ONCE:
                del self._marks[mark]
                return True
            self._mark(mark, _ONCE)
        return False

    def load(self, tenant: str, typed: TypedValue, loads: Callable[[TypedValue], Any]) -> Any:
        """`loads(typed)`, or a copy of the value these bytes decoded to before: kept from its
        second read on, if a copy is cheaper than decoding (see module docstring)."""
        if len(typed[1]) < MIN_BYTES:
            return loads(typed)
        key = (tenant, typed[0], typed[1])
        marked = hash(key)
        if self._marks.get(marked) == _PLAIN:  # a dict read needs no lock (GIL): plain values,
            return loads(typed)  # most of a read's, skip the entry lookup and the lock
        with self._lock:
            copy = self._entries.get(key)
            if copy is not None:
                self._entries.move_to_end(key)
                mark = None
            else:
                mark = self._marks.get(marked)
        if copy is not None:
            return pickle.loads(copy)  # our own bytes
        if mark == _PLAIN:
            return loads(typed)
        started = time.perf_counter()
        value = loads(typed)
        decode_seconds = time.perf_counter() - started
        if mark is None:
            with self._lock:
                self._mark(marked, _ONCE)
            return value
        try:
            copy = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            copy_seconds = float("inf")
            for _ in range(2):  # the better of two: a process' first copy of a type is slower
                started = time.perf_counter()
                pickle.loads(copy)
                copy_seconds = min(copy_seconds, time.perf_counter() - started)
            cheaper = copy_seconds + COPY_OVERHEAD_SECONDS < decode_seconds
        except Exception:  # pickle cannot copy it: decoded each time
            copy, cheaper = b"", False
        if cheaper:
            self._keep(key, copy)
        with self._lock:
            self._marks.pop(marked, None)
            if not cheaper:
                self._mark(marked, _PLAIN)
        return value

    def _mark(self, mark: int, state: int) -> None:
        if len(self._marks) >= MARKS_LIMIT:
            self._marks.clear()
        self._marks[mark] = state

    def put(self, tenant: str, typed: TypedValue, value: Any) -> None:
        """Remember `value`, decoded from `typed`; a value pickle cannot copy, or too large for
        the limit, is not kept."""
        copy = _pickled(value)
        if copy is not None:
            self._keep((tenant, typed[0], typed[1]), copy)

    def _keep(self, key: Key, copy: bytes) -> None:
        size = _size(key, copy)
        if size > self.limit:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= _size(key, old)
            self._entries[key] = copy
            self._size += size
            while self._size > self.limit:
                evicted, data = self._entries.popitem(last=False)
                self._size -= _size(evicted, data)

    def forget_tenant(self, tenant: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == tenant]:
                self._size -= _size(key, self._entries.pop(key))
            self._marks.clear()  # hashes carry no tenant: all of them go
            for sequence in [k for k in self._runs if k[0] == tenant]:
                self._runs_size -= sum(r.size for r in self._runs.pop(sequence))


def _pickled(value: Any) -> bytes | None:
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:  # pickle cannot copy it: not kept
        return None


def _size(key: Key, copy: bytes) -> int:
    return len(key[0]) + len(key[1]) + len(key[2]) + len(copy)
