"""Metrics, Prometheus exposition, traces, structured logs, and the flusher's health record."""
