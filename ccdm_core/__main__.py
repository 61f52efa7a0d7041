"""`python -m ccdm_core` runs the `ccdm` command line."""
import sys

from .cli import main

sys.exit(main())
