"""Benchmarks: TieredSaver against the Postgres-only, Redis-only and in-memory checkpointers.

Run `python -m benchmarks [--quick|--full] [--only WORKLOAD ...] [--out DIR]`; see `__main__.py`.
Modules: `env` (servers, throwaway database, names), `savers` (one factory per checkpointer),
`floor` (the raw Redis floor), `data` / `graph` (what gets written), `workloads/` (what gets
measured), `probes` (server-side measurements), `stats`, `report`, `plots`, `machine`.
"""
