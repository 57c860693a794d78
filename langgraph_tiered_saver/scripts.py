"""The Lua scripts, loaded once at import and called by SHA."""

from __future__ import annotations

from ._io import LuaScript

PUT = LuaScript.load("put")
PUT_WRITES = LuaScript.load("put_writes")
GET = LuaScript.load("get")
WRITES = LuaScript.load("writes")
DELETE_MEMBERS = LuaScript.load("delete_members")
IMPORT = LuaScript.load("import")
OUTBOX_READ = LuaScript.load("outbox_read")
OUTBOX_ACK = LuaScript.load("outbox_ack")
DIRTY_CLEAR = LuaScript.load("dirty_clear")
LOCK_RELEASE = LuaScript.load("lock_release")
LOCK_ACQUIRE = LuaScript.load("lock_acquire")
LOCK_RENEW = LuaScript.load("lock_renew")
