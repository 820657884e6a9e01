"""``python -m analytics``: see :mod:`analytics.cli`."""

from analytics.cli import main_and_exit

main_and_exit()
