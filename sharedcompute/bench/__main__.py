"""``python -m sharedcompute.bench``: the same as ``sharedcompute bench``."""
import sys

from sharedcompute.bench import main

sys.exit(main())
