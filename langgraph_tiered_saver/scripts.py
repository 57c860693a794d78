"""The Lua scripts, with their KEYS and ARGV slots named in one place.

Each script declares the names of its keys and arguments here. Loading prepends a header that
binds those names for the Lua side (`KEY.idx`, `ARG.ttl_ms`, `REST` = index of the first
variadic argument, `OUTBOX.*` = the outbox entry kinds), and `LuaScript.call` takes them by
name on the Python side, so the two sides cannot disagree on a position. Scripts are loaded
once at import and called by SHA (EVALSHA).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from . import keys as K

# Every thread script gets the thread's keys (one slot) in this order, then its own extras.
THREAD_KEYS = (*K.THREAD_KEY_NAMES, "lock")


@dataclass(frozen=True)
class LuaScript:
    """A script from `langgraph_tiered_saver/lua/`, its slots named (see module docstring)."""

    name: str
    keys: tuple[str, ...]
    argv: tuple[str, ...]
    source: str
    sha: str

    @classmethod
    def load(cls, name: str, keys: Sequence[str], argv: Sequence[str], rest: str | None = None) -> LuaScript:
        lua = resources.files(__package__) / "lua"
        header = "\n".join([
            f"-- {name}.lua  KEYS: {', '.join(keys)}  ARGV: {', '.join(argv)}" + (f", {rest}..." if rest else ""),
            "local KEY = {" + ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(keys, 1)) + "}",
            "local ARG = {" + ", ".join(f"{a} = ARGV[{i}]" for i, a in enumerate(argv, 1)) + "}",
            f"local REST = {len(argv) + 1}",
            "local THREAD_KEYS = {" + ", ".join(f'"{k}"' for k in K.THREAD_KEY_NAMES) + "}",
            "local OUTBOX = {" + ", ".join(f'{kind} = "{code}"' for kind, code in K.OUTBOX_KINDS.items()) + "}",
        ])  # fmt: skip
        common = (lua / "_common.lua").read_text()
        full = header + "\n" + common + "\n" + (lua / f"{name}.lua").read_text()
        return cls(name, tuple(keys), tuple(argv), full, hashlib.sha1(full.encode()).hexdigest())

    def call(self, keys: Mapping[str, str], args: Mapping[str, Any], rest: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The EVALSHA command; `keys` and `args` must name exactly the declared slots."""
        if tuple(keys) != self.keys or tuple(args) != self.argv:
            raise TypeError(f"{self.name}.lua takes KEYS {self.keys} and ARGV {self.argv}, got {tuple(keys)} {tuple(args)}")
        return ("EVALSHA", self.sha, len(self.keys), *keys.values(), *args.values(), *rest)


def thread_keys(prefix: str, tenant_id: str, thread_id: str, **extra: str) -> dict[str, str]:
    """The KEYS of a thread script by name: the thread's keys, its run lock, then `extra`."""
    names = dict(zip(K.THREAD_KEY_NAMES, K.thread_keys(prefix, tenant_id, thread_id), strict=True))
    return {**names, "lock": K.lock_key(prefix, tenant_id, thread_id), **extra}


# tenant registry and outbox index entries, the epoch the writer knows (sentinel.py), and
# whether the registry may mark a new thread "born" (known.py)
_WRITE_MARK = ("now_ms", "thread_id", "dirty_member", "epoch", "trust")
_WRITE_KEYS = (*THREAD_KEYS, "registry", "dirty", "epoch", "known", "write_through")
# what tells a miss of a new thread from one Postgres may answer (known.py)
_KNOWN_KEYS = ("registry", "known", "epoch", "write_through")
PUT = LuaScript.load(
    "put", _WRITE_KEYS, ("ttl_ms", "fence", "track", "member", "record", "refs", "run_id", *_WRITE_MARK),
    rest="field, value",
)  # fmt: skip
PUT_WRITES = LuaScript.load(
    "put_writes", _WRITE_KEYS, ("ttl_ms", "fence", "track", *_WRITE_MARK), rest="field, record, overwrite"
)
GET = LuaScript.load(
    "get", (*THREAD_KEYS, *_KNOWN_KEYS), ("refresh_ttl_ms", "mode", "thread_id", "trust"), rest="namespace | member"
)
WRITES = LuaScript.load("writes", THREAD_KEYS, (), rest="member")
DELETE_MEMBERS = LuaScript.load("delete_members", THREAD_KEYS, ("mode",), rest="id")
IMPORT = LuaScript.load("import", THREAD_KEYS, ("ttl_ms", "mark_pending"), rest="section, n, item")
OUTBOX_READ = LuaScript.load("outbox_read", (*THREAD_KEYS, "flush_lock"), ("limit", "token", "lock_ttl_ms"))
OUTBOX_ACK = LuaScript.load(
    "outbox_ack", (*THREAD_KEYS, "flush_lock"), ("token", "release", "ttl_ms"), rest="entry, version"
)
DIRTY_CLEAR = LuaScript.load("dirty_clear", ("dirty",), ("member", "observed"))
LOCK_ACQUIRE = LuaScript.load("lock_acquire", ("lock", "meta"), ("token", "ttl_ms", "thread_ttl_ms"))
LOCK_RENEW = LuaScript.load("lock_renew", ("lock",), ("token", "ttl_ms"))
LOCK_RELEASE = LuaScript.load("lock_release", ("lock",), ("token",))
KNOWN_SEEN = LuaScript.load("known_seen", ("write_through",), ("count",))
KNOWN_COMPLETE = LuaScript.load("known_complete", ("known", "epoch", "write_through"), ("token",))
WORKER_HEARTBEAT = LuaScript.load("worker_heartbeat", ("workers",), ("worker", "lease_ms"))
DELTA_HISTORY = LuaScript.load("delta_history", THREAD_KEYS, ("refresh_ttl_ms", "ns", "checkpoint_id"), rest="channel")
LIST = LuaScript.load(
    "list", THREAD_KEYS, ("refresh_ttl_ms", "ns_mode", "ns", "checkpoint_id", "before_id", "limit")
)
