"""The Lua scripts, with their KEYS and ARGV slots named in one place.

Each script declares the names of its keys and arguments here. Loading prepends a header that
binds those names for the Lua side (`KEY.idx`, `ARG.ttl_ms`, `REST` = index of the first
variadic argument, `OUTBOX.*` = the outbox entry kinds), and `LuaScript.call` takes them by
name on the Python side, so the two sides cannot disagree on a position. Scripts are loaded
once at import and called by SHA (EVALSHA).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from langgraph_tiered_saver.hot import keys as K

# Every thread script gets the thread's keys (one slot) in this order, then its own extras.
THREAD_KEYS = (*K.THREAD_KEY_NAMES, "lock")


@dataclass(frozen=True)
class LuaScript:
    """A script from `langgraph_tiered_saver/hot/lua/`, its slots named (see module docstring)."""

    name: str
    keys: tuple[str, ...]
    argv: tuple[str, ...]
    source: str
    sha: str
    derived: bool = False

    @property
    def key_names(self) -> tuple[str, ...]:
        """The KEY.<name> the script may use: its declared keys, and those it derives."""
        return (*self.keys, *THREAD_KEYS) if self.derived else self.keys

    @classmethod
    def load(
        cls, name: str, keys: Sequence[str], argv: Sequence[str], rest: str | None = None, *, derived: bool = False
    ) -> LuaScript:
        """`derived`: the first key is the thread's key prefix (`keys.thread_prefix`), from which
        the script names the thread's keys and run lock itself (THREAD_KEYS): one argument
        instead of ten on the hot read. They share the prefix's hash tag, hence its Cluster
        slot, so the script still touches one slot."""
        lua = resources.files(__package__) / "lua"
        bind = "local KEY = {" + ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(keys, 1)) + "}"
        if derived:
            bind += (
                "\nfor _, name in ipairs({" + ", ".join(f'"{k}"' for k in K.THREAD_KEY_NAMES) + "}) do"
                " KEY[name] = KEYS[1] .. \":\" .. name end"
                f"\nKEY.lock = KEYS[1] .. \":{K.LOCK_SUFFIX}\""
            )
        body = (lua / f"{name}.lua").read_text()
        common = used_common((lua / "_common.lua").read_text(), body)
        used = _code(common + body)
        header = "\n".join([
            f"-- {name}.lua  KEYS: {', '.join(keys)}  ARGV: {', '.join(argv)}" + (f", {rest}..." if rest else ""),
            bind,
            "local ARG = {" + ", ".join(f"{a} = ARGV[{i}]" for i, a in enumerate(argv, 1)) + "}",
            *([f"local REST = {len(argv) + 1}"] if _uses("REST", used) else []),
            *(["local THREAD_KEYS = {" + ", ".join(f'"{k}"' for k in K.THREAD_KEY_NAMES) + "}"]
              if _uses("THREAD_KEYS", used) else []),
            *(["local OUTBOX = {" + ", ".join(f'{kind} = "{code}"' for kind, code in K.OUTBOX_KINDS.items()) + "}"]
              if _uses("OUTBOX", used) else []),
        ])  # fmt: skip
        full = header + "\n" + common + "\n" + body
        return cls(name, tuple(keys), tuple(argv), full, hashlib.sha1(full.encode()).hexdigest(), derived)

    def call(self, keys: Mapping[str, str], args: Mapping[str, Any], rest: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The EVALSHA command; `keys` and `args` must name exactly the declared slots."""
        if tuple(keys) != self.keys or tuple(args) != self.argv:
            raise TypeError(f"{self.name}.lua takes KEYS {self.keys} and ARGV {self.argv}, got {tuple(keys)} {tuple(args)}")
        return ("EVALSHA", self.sha, len(self.keys), *keys.values(), *args.values(), *rest)

    def inline(self, command: tuple[Any, ...]) -> tuple[Any, ...]:
        """An EVALSHA command of this script as EVAL with its source: never NOSCRIPT, for a
        command pipelined after a write, which a NOSCRIPT retry of the pipeline would repeat."""
        if command[:2] != ("EVALSHA", self.sha):
            raise ValueError(f"not a call of {self.name}.lua")
        return ("EVAL", self.source, *command[2:])

    def check_keys(self, keys: Mapping[str, str]) -> tuple[str, ...]:
        """The values of `keys`, which must name exactly the declared KEYS: a key plan built
        once and checked here, for `call_planned`."""
        if tuple(keys) != self.keys:
            raise TypeError(f"{self.name}.lua takes KEYS {self.keys}, got {tuple(keys)}")
        return tuple(keys.values())

    def call_planned(self, keys: tuple[str, ...], args: Sequence[Any], rest: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The EVALSHA command on the hot path: `keys` from `check_keys`, `args` in declared order."""
        if len(args) != len(self.argv):
            raise TypeError(f"{self.name}.lua takes ARGV {self.argv}, got {len(args)} values")
        return ("EVALSHA", self.sha, len(keys), *keys, *args, *rest)


def _uses(name: str, lua: str) -> bool:
    return re.search(rf"\b{name}\b", lua) is not None


def _code(lua: str) -> str:
    """`lua` without its comment lines (a name a comment mentions is not a use)."""
    return "\n".join(line for line in lua.splitlines() if not line.lstrip().startswith("--"))


def used_common(common: str, body: str) -> str:
    """The part of `_common.lua` a script body needs: every line outside its top-level
    `local function`s (constants), and those functions the body calls, directly or through
    another one, in their order. Redis runs a whole script on every call, so each helper it
    carries is a closure made per call: all twenty cost get.lua ~4 µs of server time."""
    chunks: list[tuple[str | None, list[str]]] = []  # (function name or None, its lines)
    comments: list[str] = []
    lines = iter(common.splitlines())
    for line in lines:
        if line.startswith("--"):
            comments.append(line)
            continue
        match = re.match(r"local function (\w+)\(", line)
        block = [*comments, line]
        comments = []
        if match:
            for inner in lines:
                block.append(inner)
                if inner == "end":
                    break
            else:
                raise ValueError(f"_common.lua: function {match[1]} has no `end` at column 0")
        chunks.append((match[1] if match else None, block))
    chunks.append((None, comments))
    kept = {i for i, (fn, _) in enumerate(chunks) if fn is None}
    grew = True
    while grew:  # add the functions the kept text calls, until none is added
        text = _code(body) + "\n" + _code("\n".join(line for i in kept for line in chunks[i][1]))
        new = {i for i, (fn, _) in enumerate(chunks) if i not in kept and fn is not None and _uses(fn, text)}
        kept |= new
        grew = bool(new)
    return "\n".join(line for i, (_, block) in enumerate(chunks) if i in kept for line in block) + "\n"


def thread_keys(prefix: str, tenant_id: str, thread_id: str, **extra: str) -> dict[str, str]:
    """The KEYS of a thread script by name: the thread's keys, its run lock, then `extra`."""
    names = dict(zip(K.THREAD_KEY_NAMES, K.thread_keys(prefix, tenant_id, thread_id), strict=True))
    return {**names, "lock": K.lock_key(prefix, tenant_id, thread_id), **extra}


# the tenant registry and outbox index entries, and the epoch the writer knows (sentinel.py)
_WRITE_MARK = ("now_ms", "thread_id", "dirty_member", "epoch")
WRITE = LuaScript.load(
    "write", ("thread", "registry", "dirty", "epoch", "vgen"),
    ("ttl_ms", "fence", "lock_ttl_ms", "release", "track", *_WRITE_MARK, "member", "record", "refs", "run_id", "fresh",
     "writes"),
    rest="(field, record, overwrite) * writes, (blob field, value)", derived=True,
)  # fmt: skip
# `vgen`: the shard's generation, which a thread's copy must have been verified under (hotwatch.py)
GET = LuaScript.load(
    "get", ("thread", "vgen"), ("refresh_ttl_ms", "mode", "lock_token", "lock_ttl_ms", "thread_ttl_ms"),
    rest="namespace | member", derived=True,
)
VERIFY = LuaScript.load("verify", (*THREAD_KEYS, "vgen"), ("generation",))
WRITES = LuaScript.load("writes", THREAD_KEYS, (), rest="member")
DELETE_MEMBERS = LuaScript.load("delete_members", THREAD_KEYS, ("mode",), rest="id")
IMPORT = LuaScript.load("import", (*THREAD_KEYS, "vgen"), ("ttl_ms", "mark_pending"), rest="section, n, item")
OUTBOX_READ = LuaScript.load("outbox_read", (*THREAD_KEYS, "flush_lock"), ("limit", "token", "lock_ttl_ms", "force"))
OUTBOX_ACK = LuaScript.load(
    "outbox_ack", (*THREAD_KEYS, "flush_lock", "dirty"), ("token", "release", "ttl_ms", "member", "observed"),
    rest="entry, version, replacement",
)
LOCK_ACQUIRE = LuaScript.load("lock_acquire", ("lock", "meta"), ("token", "ttl_ms", "thread_ttl_ms"))
LOCK_RENEW = LuaScript.load("lock_renew", ("lock",), ("token", "ttl_ms"))
LOCK_RELEASE = LuaScript.load("lock_release", ("lock",), ("token",))
SERVER_CHECK = LuaScript.load("server_check", ("server",), ())
WORKER_HEARTBEAT = LuaScript.load("worker_heartbeat", ("workers",), ("worker", "lease_ms"))
DELTA_HISTORY = LuaScript.load(
    "delta_history", ("thread",), ("refresh_ttl_ms", "ns", "checkpoint_id", "known", "known_from", "known_count", "known_born"),
    rest="channel", derived=True,
)
LIST = LuaScript.load(
    "list", (*THREAD_KEYS, "vgen"), ("refresh_ttl_ms", "ns_mode", "ns", "checkpoint_id", "before_id", "limit")
)
LIST_MARK = LuaScript.load("list_mark", (*THREAD_KEYS, "vgen"), ("ns_mode", "ns", "oldest", "generation"))
