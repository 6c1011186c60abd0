"""`python -m minigpt_geom`: the same command line as `minigpt-geom`."""

import sys

from .cli import main

sys.exit(main())
