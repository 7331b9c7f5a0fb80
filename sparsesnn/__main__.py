"""``python -m sparsesnn ...`` (and ``torchrun -m sparsesnn ...``) runs the command line."""

import sys

from sparsesnn.cli import main

sys.exit(main())
