"""Array helpers the analytics modules and the monitoring job share.

Kept apart from any one metric: the profiles, the performance partials and the job's segment
windows all index integer keys (window starts, window x value pairs) the same way, and count text
columns that come plain or dictionary-encoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Above this many possible keys per row (plus a constant), counting on a grid costs more than sorting.
_DENSE_PER_ROW, _DENSE_EXTRA = 4, 65_536


def distinct_keys(keys: np.ndarray, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of integer ``keys``, ascending, and each key's index among them.

    What ``np.unique(keys, return_inverse=True)`` gives, counted on a grid between the smallest and
    the largest key when that grid is small beside the keys (a day's windows, its stacked slices,
    a column's values per window): one pass instead of sorting every row's key (about 1 ms against
    9-12 ms for 200k rows).

    Args:
        keys: Integer keys (``int64``).
        step: Every key is the smallest key plus a multiple of ``step`` (window starts in
            microseconds are multiples of the window's length): the grid has one cell a step.

    Returns:
        ``(values, inverse)``: ``values[inverse]`` equals ``keys``.
    """
    if not len(keys):
        return keys, np.zeros(0, dtype=np.intp)
    low = int(keys.min())
    slots = (keys - low) // step if step != 1 else keys - low
    span = int(slots.max()) + 1
    if span > _DENSE_PER_ROW * len(keys) + _DENSE_EXTRA:
        return np.unique(keys, return_inverse=True)
    present = np.bincount(slots, minlength=span) > 0
    values = low + np.flatnonzero(present).astype(keys.dtype) * step
    return values, (np.cumsum(present) - 1)[slots]


def is_text_type(data_type: Any) -> bool:
    """Whether an Arrow type holds text: ``string``, ``large_string``, or a dictionary of either.

    A dictionary of text counts as its values (the monitoring job reads text columns
    dictionary-encoded, as Parquet stores them).
    """
    import pyarrow as pa  # only callers holding Arrow data ask; analytics.profile imports it lazily

    if pa.types.is_dictionary(data_type):
        return is_text_type(data_type.value_type)
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type))
