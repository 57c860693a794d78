"""`python -m langgraph_tiered_saver ...` runs the command-line tool."""

import sys

from langgraph_tiered_saver.cli.main import main

sys.exit(main())
