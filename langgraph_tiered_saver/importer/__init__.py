"""Adopting the saver: copy threads written by other checkpointers into the durable tier."""

from .postgres_saver import ImportReport, import_postgres_saver
from .read_through import ReadThroughSaver

__all__ = ["ImportReport", "ReadThroughSaver", "import_postgres_saver"]
