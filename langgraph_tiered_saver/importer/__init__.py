"""Adopting the saver: copy threads written by other checkpointers into the durable tier."""

from langgraph_tiered_saver.importer.postgres_saver import ImportReport, import_postgres_saver
from langgraph_tiered_saver.importer.read_through import ReadThroughSaver

__all__ = ["ImportReport", "ReadThroughSaver", "import_postgres_saver"]
