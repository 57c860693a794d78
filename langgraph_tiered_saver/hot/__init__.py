"""Hot tier: Redis operations, keys, Lua scripts, the write combiner, and knowing when Redis lost or aged data."""
