"""`python -m ddpmlab ...` runs the `ddpmlab` command (and so does `torchrun -m ddpmlab ...`)."""

import sys

from ddpmlab.cli import main

sys.exit(main())
