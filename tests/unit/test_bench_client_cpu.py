"""The benchmark's client-CPU measure (`benchmarks/client_cpu.py`) runs the saver's hot path
against its replying driver, with no server: a change to what the saver asks Redis (a script's
reply shape) must be answered there too, or the measure stops working unnoticed."""

from __future__ import annotations

from benchmarks.client_cpu import measure


def test_the_client_cpu_measure_runs_every_call() -> None:
    figures = measure(rounds=1, calls=5)
    assert set(figures) == {"put", "put_writes", "floor", "get_tuple", "get_floor"}
    assert all(f["median_us"] > 0 for f in figures.values())
