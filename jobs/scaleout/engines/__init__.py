"""Engines that run the map step of a scaled-out run: ``local``, ``spark`` and ``sfn``.

``local`` and ``spark`` run every unit's task and return a :class:`MapReport`; the driver then merges.
``sfn`` hands the whole run (map and merge) to AWS Step Functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from analytics.store import StoreConfig
from jobs.scaleout.profile_unit import UnitResult
from jobs.scaleout.units import ScaleoutError, WorkUnit

Task = Callable[[WorkUnit, StoreConfig], UnitResult]
"""What an engine runs per unit: ``jobs.scaleout.profile_unit.run_unit`` (or a wrapper of it)."""


@dataclass(frozen=True)
class MapReport:
    """What the map step did.

    Attributes:
        results: Unit index -> the result of its successful attempt.
        attempts: Unit index -> attempts made (1 when the first one succeeded).
        seconds: Wall time of the map step.
    """

    results: Mapping[int, UnitResult]
    attempts: Mapping[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def retried(self) -> int:
        """Units that needed more than one attempt."""
        return sum(1 for n in self.attempts.values() if n > 1)


class UnitsFailedError(ScaleoutError):
    """Some units still failed after every retry; no merge was attempted.

    Attributes:
        failures: Unit index -> the last error, as text.
    """

    def __init__(self, failures: Mapping[int, str], attempts: int) -> None:
        self.failures = dict(failures)
        shown = "; ".join(f"unit {i}: {why}" for i, why in sorted(self.failures.items())[:5])
        more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        super().__init__(f"{len(self.failures)} unit(s) failed after {attempts} attempt(s): {shown}{more}")
