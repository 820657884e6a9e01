"""The scale-out options of ``python -m jobs monitor`` (``--engine`` and the rest, ``docs/SCALE_OUT.md``).

Apart from :mod:`jobs.scaleout`, which re-exports them: every ``python -m jobs monitor`` builds its
parser with these options, and importing the scale-out package (its planning, with five dataclasses)
cost a run that uses no engine about 10 ms.
"""

from __future__ import annotations

import argparse

ENGINES = ("local", "spark", "sfn")
"""Engine names of ``--engine``."""

DEFAULT_RETRIES = 2


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine``, ``--cluster``, ``--unit-bytes``, ``--max-parallel`` and ``--retries``.

    Without ``--engine`` the monitoring job runs in this process as before.
    """
    group = parser.add_argument_group("scale-out (docs/SCALE_OUT.md)")
    group.add_argument(
        "--engine", choices=ENGINES, default=None, help="profile in parallel units on this engine"
    )
    group.add_argument("--cluster", default=None, help="spark: master URL; sfn: state machine ARN")
    group.add_argument("--unit-bytes", default="512MB", help="log bytes per work unit (default 512MB)")
    group.add_argument("--max-parallel", type=int, default=None, help="parallel tasks (local, spark)")
    group.add_argument(
        "--retries", type=int, default=DEFAULT_RETRIES, help="further attempts of a failed unit"
    )
