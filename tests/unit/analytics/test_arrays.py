"""analytics.arrays: distinct keys counted on a grid are np.unique's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.arrays import distinct_keys, is_text_type

pytestmark = pytest.mark.unit


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**40), 2**40), max_size=300),
    st.sampled_from([1, 7, 60_000_000, 86_400_000_000]),
    st.integers(-5, 5),
)
def test_distinct_keys_are_np_unique_s(multiples: list[int], step: int, shift: int) -> None:
    # Keys share one offset from a multiple of step (window starts of one window length).
    base = shift * 1_000
    keys = np.array([base + (m % 1_000_000) * step for m in multiples], dtype=np.int64)
    values, inverse = distinct_keys(keys, step)
    expected, expected_inverse = np.unique(keys, return_inverse=True)
    assert values.dtype == np.int64
    assert values.tolist() == expected.tolist()
    assert inverse.tolist() == expected_inverse.tolist()


def test_a_grid_too_wide_for_the_keys_is_left_to_sorting_with_the_same_answer() -> None:
    keys = np.array([0, 10**15, -(10**15), 0, 10**15], dtype=np.int64)  # a grid of 2e15 cells
    values, inverse = distinct_keys(keys)
    assert values.tolist() == [-(10**15), 0, 10**15]
    assert inverse.tolist() == [1, 2, 0, 1, 2]
    empty, none = distinct_keys(np.zeros(0, dtype=np.int64), 5)
    assert len(empty) == 0 and len(none) == 0


def test_text_types_are_strings_and_dictionaries_of_strings() -> None:
    text = [pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())]
    text.append(pa.dictionary(pa.int8(), pa.large_string()))
    other = [
        pa.int64(),
        pa.float64(),
        pa.bool_(),
        pa.null(),
        pa.binary(),
        pa.dictionary(pa.int32(), pa.int64()),
    ]
    assert [is_text_type(t) for t in text] == [True] * len(text)
    assert [is_text_type(t) for t in other] == [False] * len(other)
