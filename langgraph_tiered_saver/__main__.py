"""`python -m langgraph_tiered_saver ...` runs the command-line tool."""

import sys

from .cli import main

sys.exit(main())
