"""Redis key schema (version 2). Plain functions, no I/O.

Every key lives in one of `SHARDS` (256) shards. A thread's shard is the CRC32 of its encoded
`tenant|thread` modulo `SHARDS` (`shard_of`); every key of the thread carries the shard's hash
tag `{s0042}`, so all of them live in one Redis Cluster slot and one Lua script can touch them
atomically. The deployment-wide indexes are sharded with the same tags: each shard has its own
slice of the outbox index (`dirty`) and of each tenant's thread registry, and its own copy of
the epoch and generation. A script therefore touches
exactly one slot, on a single Redis and on a Cluster alike (one code path). Readers that need
the deployment-wide view (flush polling, a tenant's threads, the CLI) read all shards,
pipelined (a cluster pipeline splits them by node).

Tenant and thread ids may be any text PostgresSaver accepts; in keys they are percent-encoded
(`encode_id`) and stay outside the hash tag: every character outside `[A-Za-z0-9._:@+=/~-]`
(so `%`, braces, `|`, spaces and all non-ASCII) becomes its UTF-8 bytes as `%XX`. The encoding
is injective and leaves no brace or bar, so one id can neither forge a hash tag nor share
another's keys. A thread is a fixed set of keys (below): every write refreshes the TTL of all of
them, so a thread expires whole, never in part.

    <prefix>:v2:{s0042}:t:<tenant>|<thread>:<name>     the thread's keys
    <prefix>:v2:{s0042}:dirty                          the shard's outbox index
    <prefix>:v2:{s0042}:tenant:<tenant>:threads        the shard's slice of a tenant's registry
    <prefix>:v2:{s0042}:epoch                          the shard's copy of the epoch (sentinel.py)
    <prefix>:v2:{s0042}:generation, :server            what reads verify against (hotwatch.py)
    <prefix>:v2:epoch, :server                         the deployment's epoch and server run id

Inside the keys, members and fields join ids with NUL (`\\x00`), which ids may not contain:

    idx   ZSET  (score 0, lex order)  ns␀checkpoint_id                  every checkpoint, sortable
    ck    HASH  ns␀checkpoint_id  -> packed checkpoint record (checkpoint, metadata, parent)
    cv    HASH  ns␀checkpoint_id  -> blob fields of its channel values, joined by \\x01
    bl    HASH  ns␀channel␀version -> typed value (one per channel version, never rewritten)
    wi    ZSET  (lex)  ns␀checkpoint_id␀task_id␀idx                       pending-write index
    wr    HASH  same field -> packed write record
    runs  ZSET  (lex)  run_id␀ns␀checkpoint_id (written by put.lua)       for delete_for_runs
    pend  ZSET  (lex)  c␀<member> | b␀<blob field> | w␀<write field>       the thread's outbox
    meta  HASH  lock owner, fencing token, flush bookkeeping

Schema v1 (before Redis Cluster support) tagged each thread `{tenant|thread}` and kept the
indexes unsharded; `legacy_v1_dirty_key` names its outbox index, which `setup()` checks
(`cli migrate-redis` moves v1 keys over).
"""

from __future__ import annotations

import zlib
from typing import NamedTuple
from urllib.parse import quote, unquote

SCHEMA_VERSION = "v2"
SHARDS = 256
SEP = "\x00"
REF_SEP = "\x01"
THREAD_KEY_NAMES = ("idx", "ck", "cv", "bl", "wi", "wr", "runs", "pend", "meta")


# Characters left as they are in keys (the ids accepted before ids were encoded).
SAFE_ID_CHARACTERS = "._:@+=/~-"


def encode_id(value: str) -> str:
    """The key form of a tenant or thread id (see module docstring)."""
    return quote(value, safe=SAFE_ID_CHARACTERS)


def decode_id(value: str) -> str:
    return unquote(value, errors="strict")


class ThreadKeys(NamedTuple):
    idx: str
    ck: str
    cv: str
    bl: str
    wi: str
    wr: str
    runs: str
    pend: str
    meta: str


def shard_of(tenant_id: str, thread_id: str) -> int:
    """The shard of a thread: CRC32 of its encoded `tenant|thread`, modulo SHARDS."""
    return zlib.crc32(dirty_member(tenant_id, thread_id).encode()) % SHARDS


def shard_tag(shard: int) -> str:
    return f"{{s{shard:04d}}}"


def shard_prefix(prefix: str, shard: int) -> str:
    return f"{prefix}:{SCHEMA_VERSION}:{shard_tag(shard)}"


def thread_prefix(prefix: str, tenant_id: str, thread_id: str) -> str:
    shard = shard_of(tenant_id, thread_id)
    return f"{shard_prefix(prefix, shard)}:t:{dirty_member(tenant_id, thread_id)}"


def thread_keys(prefix: str, tenant_id: str, thread_id: str) -> ThreadKeys:
    base = thread_prefix(prefix, tenant_id, thread_id)
    return ThreadKeys(*(f"{base}:{name}" for name in THREAD_KEY_NAMES))


def tenant_threads_key(prefix: str, tenant_id: str, shard: int) -> str:
    """ZSET thread_id -> last write time (ms): the tenant's threads in one shard."""
    return f"{shard_prefix(prefix, shard)}:tenant:{encode_id(tenant_id)}:threads"


def generation_key(prefix: str, shard: int) -> str:
    """STRING: the shard's generation, moved whenever Redis may have come back with older copies
    than Postgres (hotwatch.py); a thread read must have been verified under the current one."""
    return f"{shard_prefix(prefix, shard)}:generation"


def server_key(prefix: str, shard: int | None = None) -> str:
    """STRING: the run id of the Redis server whose copies are known good (hotwatch.py): the
    deployment's on a single Redis (shard None), each shard's own on a Cluster."""
    if shard is None:
        return f"{prefix}:{SCHEMA_VERSION}:server"
    return f"{shard_prefix(prefix, shard)}:server"


def dirty_key(prefix: str, shard: int) -> str:
    """ZSET `tenant|thread` -> time (ms) the thread's outbox is due for flushing (one shard's)."""
    return f"{shard_prefix(prefix, shard)}:dirty"


def epoch_key(prefix: str, shard: int | None = None) -> str:
    """A random token set once per deployment (no TTL): gone or changed = Redis lost data. The
    deployment's value (shard None) and each shard's copy, which the scripts compare."""
    if shard is None:
        return f"{prefix}:{SCHEMA_VERSION}:epoch"
    return f"{shard_prefix(prefix, shard)}:epoch"


def dirty_keys(prefix: str) -> list[str]:
    """Every shard's outbox index (a deployment-wide reader reads them all)."""
    return [dirty_key(prefix, shard) for shard in range(SHARDS)]


def tenant_threads_keys(prefix: str, tenant_id: str) -> list[str]:
    """Every shard's slice of a tenant's registry."""
    return [tenant_threads_key(prefix, tenant_id, shard) for shard in range(SHARDS)]


def legacy_v1_dirty_key(prefix: str) -> str:
    """The outbox index of schema v1 (see module docstring)."""
    return f"{prefix}:v1:dirty"


def dirty_member(tenant_id: str, thread_id: str) -> str:
    return encode_id(tenant_id) + "|" + encode_id(thread_id)


def split_dirty_member(member: str) -> tuple[str, str]:
    tenant_id, _, thread_id = member.partition("|")
    return decode_id(tenant_id), decode_id(thread_id)


# The run lock's key after the thread's prefix (scripts derive it: scripts.LuaScript.load).
LOCK_SUFFIX = "lock:run"


def lock_key(prefix: str, tenant_id: str, thread_id: str, kind: str = "run") -> str:
    return f"{thread_prefix(prefix, tenant_id, thread_id)}:lock:{kind}"


# The outbox (`pend`) holds one entry per row the flusher must write: kind code, NUL, name.
OUTBOX_KINDS = {"checkpoint": "c", "blob": "b", "write": "w"}


def outbox_entry(kind: str, name: str) -> str:
    """`kind` is a key of OUTBOX_KINDS; `name` the checkpoint member, blob or write field."""
    return OUTBOX_KINDS[kind] + SEP + name


def split_outbox_entry(entry: str) -> tuple[str, str]:
    """(kind code, name) of an outbox entry."""
    code, _, name = entry.partition(SEP)
    return code, name


def checkpoint_member(ns: str, checkpoint_id: str) -> str:
    return ns + SEP + checkpoint_id


def split_checkpoint_member(member: str) -> tuple[str, str]:
    ns, _, checkpoint_id = member.partition(SEP)
    return ns, checkpoint_id


def blob_field(ns: str, channel: str, version: str | int | float) -> str:
    return ns + SEP + channel + SEP + str(version)


def split_blob_field(field: str) -> tuple[str, str, str]:
    ns, channel, version = field.split(SEP, 2)
    return ns, channel, version


def write_field(ns: str, checkpoint_id: str, task_id: str, idx: int) -> str:
    return ns + SEP + checkpoint_id + SEP + task_id + SEP + str(idx)


def split_write_field(field: str) -> tuple[str, str, str, int]:
    ns, checkpoint_id, task_id, idx = field.split(SEP, 3)
    return ns, checkpoint_id, task_id, int(idx)


def ns_range(ns: str) -> tuple[str, str]:
    """ZRANGEBYLEX bounds covering every checkpoint member of one namespace."""
    return "[" + ns + SEP, "(" + ns + REF_SEP


def blob_threads_key(prefix: str, tenant_id: str, digest: str, shard: int) -> str:
    """SET of the tenant's threads (of one shard) whose Redis data points at an offloaded blob."""
    return f"{shard_prefix(prefix, shard)}:tenant:{encode_id(tenant_id)}:blob:{digest}"
