"""``python -m torchgmm.cli``: the same as the ``torchgmm`` command. Owns nothing else."""

import sys

from torchgmm.cli import main

sys.exit(main())
