"""The command-line tool (`python -m langgraph_tiered_saver`, `langgraph-tiered-saver`)."""
