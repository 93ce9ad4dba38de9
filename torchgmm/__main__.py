"""``python -m torchgmm``: the command line (:mod:`torchgmm.cli`)."""

import sys

from torchgmm.cli import main

sys.exit(main())
