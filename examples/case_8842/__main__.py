"""`python -m examples.case_8842`: the case 8842 demo on TieredSaver (see run.py)."""

import sys

from .run import main

sys.exit(main())
