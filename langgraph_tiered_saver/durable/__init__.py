"""Durable tier: Postgres tables with row-level security, written by the flusher.

Pure logic and SQL: every operation is a sans-I/O generator (`*_op`) that the saver and the
flusher run with `_io.SyncDriver` / `_io.AsyncDriver`. Modules: `sql` (statements), `migrations`,
`ops` (reads and the flush upsert), `retention` (delete, prune, copy), `roles`, `records`,
`audit` (the readable JSONB copy). This package imports none of them itself, so importing one
(`durable.sql` from the blob store) never drags in the others.
"""
