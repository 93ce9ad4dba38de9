import sys

from torchgmm.cli import main

sys.exit(main())
