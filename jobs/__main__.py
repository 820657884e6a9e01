"""``python -m jobs``: the studio's job command line (see :mod:`jobs.cli`)."""

import sys

from jobs.cli import main

sys.exit(main(whole_process=True))
