"""The case_8842 graph for LangGraph Agent Server (see langgraph.json beside this file).

Compiled without a checkpointer: the server gives the graph the one `langgraph.json` names
(`langgraph_tiered_saver.server.checkpointer`), or its own default when that entry is left out.
"""

from examples.case_8842.graph import build_graph

graph = build_graph(None)
