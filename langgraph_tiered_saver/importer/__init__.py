"""Adopting the saver: copy threads written by other checkpointers into the durable tier."""

from .postgres_saver import ImportReport, import_postgres_saver

__all__ = ["ImportReport", "import_postgres_saver"]
