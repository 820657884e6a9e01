"""Shared conversion of result dataclasses to pandas / polars / plain dicts.

Result types implement ``_records()`` (one flat dict per row); this mixin turns those rows into a
DataFrame. pandas and polars are imported only when a conversion is asked for, so the CLI and the
jobs that never build a frame do not pay their import time.
"""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats replaced by ``"inf"``, ``"-inf"`` or ``"nan"``.

    JSON has no literal for them; the strings keep the information (an infinite normed Wasserstein
    distance means the reference was constant) instead of collapsing it to ``null``.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class TabularMixin:
    """Adds ``to_pandas()`` and ``to_polars()`` built from ``_records()``."""

    def _records(self) -> list[dict[str, Any]]:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def to_pandas(self):
        """Return the rows as a ``pandas.DataFrame`` (one row per record)."""
        import pandas as pd

        return pd.DataFrame.from_records(self._records())

    def to_polars(self):
        """Return the rows as a ``polars.DataFrame`` (one row per record)."""
        import polars as pl

        return pl.from_dicts(self._records(), infer_schema_length=None)
