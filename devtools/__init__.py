"""Development-only tooling (not shipped in the wheel): throwaway Redis, Postgres and
PgBouncer servers for the tests, the example and the benchmarks."""
