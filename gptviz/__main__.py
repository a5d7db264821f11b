"""`python -m gptviz COMMAND ...`: the same dispatcher as the installed `gptviz` script (gptviz.commands)."""

import sys

from .commands import main

sys.exit(main())
