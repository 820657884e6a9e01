"""Latency, classification and regression partials computed from Arrow tables in NumPy.

:mod:`analytics.performance` computes each mergeable partial with DuckDB from relations. Given the
Arrow tables behind them, it asks this module first: the same rows, in the same order, for about
half the CPU (the latency and classification partials of the monitoring job's stacked 200k-row
bench day: 0.21 s of queries, 0.11 s here). Counts, bins and extrema are exactly the query's:
windows are cut by the same integer arithmetic as ``analytics._duckdb.window_start_sql``, and
logarithms come from Arrow's ``ln``, which calls the C library's ``log`` as DuckDB's ``ln`` does,
so a value on a bin boundary lands in the same bin. Sums (latency, log loss, scores, errors, the
labels' mean and squared deviations) are equal up to the order of floating-point addition, as two
partials of the same rows are (``docs/SCALE_OUT.md``).

Each function answers ``None`` for what it does not cover, and the caller runs the query:

* windows other than ``minute``, ``hour`` and ``day`` (weeks and months follow the calendar), or a
  ``timestamp`` that is not a microsecond timestamp, or one holding DuckDB's infinities;
* columns that are neither floating-point nor integer numbers (a boolean or text label, say);
* a prediction-column decision (``threshold=None``) or a boolean ``positive_label``;
* labels where a request id appears twice: the query's left join repeats the request's row once
  per label, which the caller detects and answers by choosing one label per request.

Arguments are checked by the caller (``analytics.performance``) before it comes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics._duckdb import FIXED_WINDOW_MICROS
from analytics._native import Kernels, load_kernels
from analytics.arrays import distinct_keys

# DuckDB reads these int64 values of an Arrow timestamp as its infinities, which fall in no window.
_INFINITE_TICKS = (np.iinfo(np.int64).max, -np.iinfo(np.int64).max)
# Past this many (window, bin) cells, pairs are counted by sorting instead of on a dense grid.
_DENSE_CELLS = 1 << 23
# Request ids up to this long are joined in NumPy; longer ones by Arrow's hash tables (slower).
_MAX_ID_BYTES = 64
# The join's direct-address table has at most 2**22 slots (two 32 MB arrays): past a million labels
# more of them share a slot and are found by binary search instead.
_MAX_TABLE_BITS = 22

#: The compiled label join (``mms_join_ids`` in ``_kernels.c``), or ``None``: not built, or
#: ``MMS_NATIVE_KERNELS=0``. Then the NumPy route joins the same rows.
KERNELS = load_kernels()


@dataclass(frozen=True)
class _Windows:
    """The windows of a table's rows.

    Attributes:
        starts: Start of each window with a row (microseconds since 1970, naive UTC), ascending.
        of_row: Each row's window (index into ``starts``); ``-1`` for a row without a timestamp.
        missing: Rows without a timestamp.
    """

    starts: np.ndarray
    of_row: np.ndarray
    missing: int


def _array(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _values(array: pa.Array, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-width array's values (anything at null slots) and its validity mask, from its buffers.

    Read from the buffers: pyarrow's ``to_numpy`` may import pandas to check for pandas types.
    """
    n = len(array)
    data = array.buffers()[1]
    if n == 0 or data is None:
        return np.zeros(n, dtype=dtype), np.zeros(n, dtype=bool)
    values = np.frombuffer(data, dtype=dtype, count=n, offset=array.offset * np.dtype(dtype).itemsize)
    return values, _validity(array)


def _validity(array: pa.Array) -> np.ndarray:
    """An array's validity mask, from its bitmap."""
    n = len(array)
    if not array.null_count:
        return np.ones(n, dtype=bool)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + n].astype(bool)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


def _doubles(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A numeric array as doubles (``CAST(x AS DOUBLE)``) and its validity mask."""
    if array.type != pa.float64():
        array = array.cast(pa.float64(), safe=False)  # rounds to nearest, as DuckDB's cast
    return _values(array, np.float64)


def _ln(values: np.ndarray) -> np.ndarray:
    """Natural logarithm by the C library, as DuckDB's ``ln`` (of positive finite values)."""
    return _values(pc.ln(pa.array(values, pa.float64())), np.float64)[0]


def _words(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each string's bytes zero-padded into 64-bit words, its length and validity; ``None`` past
    :data:`_MAX_ID_BYTES` bytes. Ids usually share one length, and are then a reshape of the data."""
    n = len(array)
    offsets, data = _offsets_and_data(array)
    lengths = np.diff(offsets)
    valid = _validity(array)
    width = int(lengths.max()) if n else 0
    if width > _MAX_ID_BYTES:
        return None
    words = max(1, -(-width // 8))
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    if width:
        data = data[offsets[0] : offsets[-1]]
        if bool(np.all(lengths == width)):
            padded[:, :width] = data.reshape(n, width)
        else:
            rows = np.repeat(np.arange(n), lengths)
            padded[rows, np.arange(len(data)) - np.repeat(offsets[:-1] - offsets[0], lengths)] = data
    return padded.view(np.uint64), lengths, valid


def _hashes(words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of words and its length (wrapping arithmetic; equal rows, equal
    hashes; the join checks every match on the words themselves)."""
    hashed = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for column in words.T:
        hashed = (hashed ^ column) * np.uint64(0xBF58476D1CE4E5B9)
        hashed ^= hashed >> np.uint64(31)
    # SplitMix64's finaliser: every bit of the words reaches the low bits, which pick the slot.
    hashed ^= hashed >> np.uint64(30)
    hashed *= np.uint64(0xBF58476D1CE4E5B9)
    hashed ^= hashed >> np.uint64(27)
    hashed *= np.uint64(0x94D049BB133111EB)
    hashed ^= hashed >> np.uint64(31)
    return hashed


def _label_positions(ids: pa.Array, label_ids: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """For each request id, the position of its label and whether it has one (the left join).

    A position is meaningful only where the request has a label. ``None`` when a non-null id appears
    twice among the labels. NULL ids match nothing. With the :data:`KERNELS`, the compiled join
    runs: one pass over each side into a hash table (0.017 s for the bench day, against 0.05 s and
    about 60 MB of temporaries in NumPy, 0.13 s by Arrow's ``index_in``).
    """
    if KERNELS is not None:
        return _label_positions_native(KERNELS, ids, label_ids)
    logs, labels = _words(ids), _words(label_ids)
    if logs is None or labels is None:
        return _label_positions_hashed(ids, label_ids)
    (log_words, log_lengths, log_valid), (label_words, label_lengths, label_valid) = logs, labels
    if log_words.shape[1] != label_words.shape[1]:
        width = max(log_words.shape[1], label_words.shape[1])
        log_words, label_words = (
            np.pad(w, ((0, 0), (0, width - w.shape[1]))) for w in (log_words, label_words)
        )
    kept = np.flatnonzero(label_valid)
    log_hashes = _hashes(log_words, log_lengths)
    if not len(kept):
        return np.zeros(len(log_hashes), dtype=np.int64), np.zeros(len(log_hashes), dtype=bool)
    label_hashes = _hashes(label_words[kept], label_lengths[kept])
    # A direct-address table of four slots a label: most labels have a slot of their own, read once
    # per request (a binary search reads about 18 places, out of cache); the labels sharing a slot
    # are searched among themselves. 0.02 s for the bench day, against 0.08 s sorting and searching.
    bits = min(max(4, (len(kept) * 4 - 1).bit_length()), _MAX_TABLE_BITS)
    mask = np.uint64((1 << bits) - 1)
    label_slots = (label_hashes & mask).astype(np.intp)
    crowd = np.bincount(label_slots, minlength=1 << bits)
    alone = crowd[label_slots] == 1
    table = np.full(1 << bits, -1, dtype=np.int64)
    table[label_slots[alone]] = np.flatnonzero(alone)
    log_slots = (log_hashes & mask).astype(np.intp)
    candidate = table[log_slots]  # index into kept; -1: no label alone in the slot
    shared = np.flatnonzero(~alone)
    if len(shared):
        shared = shared[np.argsort(label_hashes[shared], kind="stable")]
        shared_hashes = label_hashes[shared]
        same = np.flatnonzero(shared_hashes[1:] == shared_hashes[:-1])
        if len(same):
            first, second = kept[shared[same]], kept[shared[same + 1]]
            if np.any(
                (label_lengths[first] == label_lengths[second])
                & np.all(label_words[first] == label_words[second], axis=1)
            ):
                return None
            return _label_positions_hashed(ids, label_ids)  # two ids share a hash: Arrow joins them
        searched = np.flatnonzero(crowd[log_slots] > 1)
        at = np.minimum(np.searchsorted(shared_hashes, log_hashes[searched]), len(shared) - 1)
        candidate[searched] = np.where(shared_hashes[at] == log_hashes[searched], shared[at], -1)
    found = candidate >= 0
    position = kept[np.where(found, candidate, 0)]
    matched = (
        log_valid
        & found
        & (label_lengths[position] == log_lengths)
        & np.all(label_words[position] == log_words, axis=1)
    )
    return position, matched


def _offsets_and_data(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's ``len + 1`` offsets (64-bit) into its data buffer, and that buffer's bytes
    (one zero byte when every string is empty: a valid address that is never read)."""
    n = len(array)
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets_buffer, data_buffer = array.buffers()[1:3]
    if n == 0 or offsets_buffer is None:
        offsets = np.zeros(n + 1, dtype=np.int64)
    else:
        start = array.offset * np.dtype(offset_type).itemsize
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=n + 1, offset=start)
        offsets = offsets.astype(np.int64, copy=False)
    if data_buffer is None or not data_buffer.size:
        return offsets, np.zeros(1, dtype=np.uint8)
    return offsets, np.frombuffer(data_buffer, dtype=np.uint8)


def _string_layout(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`_offsets_and_data` and the validity bytes (``None`` when no value is NULL), as
    ``mms_join_ids`` reads them."""
    offsets, data = _offsets_and_data(array)
    return offsets, data, _validity(array).view(np.uint8) if array.null_count else None


def _label_positions_native(
    kernels: Kernels, ids: pa.Array, label_ids: pa.Array
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_label_positions` by the compiled join (``mms_join_ids``)."""
    if len(label_ids) >= (1 << 32) - 1:
        return _label_positions_hashed(ids, label_ids)  # positions past the slots' 32 bits
    offsets, data, valid = _string_layout(ids)
    label_offsets, label_data, label_valid = _string_layout(label_ids)
    bits = max(4, (2 * len(label_ids)).bit_length())  # at most half the slots taken
    table = np.zeros(1 << bits, dtype=np.uint64)  # zeroed pages from the system: only the touched cost
    position = np.empty(len(ids), dtype=np.int64)
    duplicate = kernels.join_ids(
        offsets.ctypes.data,
        data.ctypes.data,
        None if valid is None else valid.ctypes.data,
        len(ids),
        label_offsets.ctypes.data,
        label_data.ctypes.data,
        None if label_valid is None else label_valid.ctypes.data,
        len(label_ids),
        table.ctypes.data,
        bits,
        position.ctypes.data,
    )
    if duplicate:
        return None
    return position, position >= 0


def _label_positions_hashed(ids: pa.Array, label_ids: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_label_positions` by Arrow's hash tables (long ids, or a clash of :func:`_hashes`)."""
    if label_ids.type != ids.type:
        label_ids = label_ids.cast(ids.type)
    if pc.count_distinct(label_ids, mode="only_valid").as_py() != len(label_ids) - label_ids.null_count:
        return None
    return _values(pc.index_in(ids, value_set=label_ids, skip_nulls=True).cast(pa.int64()), np.int64)


def _windows(table: pa.Table, window: str) -> _Windows | None:
    """The rows' UTC calendar windows, or ``None`` when the query must cut them (see the module doc)."""
    size = FIXED_WINDOW_MICROS.get(window)
    if size is None or "timestamp" not in table.column_names:
        return None
    array = _array(table, "timestamp")
    if not pa.types.is_timestamp(array.type) or array.type.unit != "us":
        return None
    ticks, timed = _values(array, np.int64)
    timed_ticks = ticks[timed]
    # Two comparisons: np.isin would sort the 200k ticks of a day to find two values.
    if bool(np.any((timed_ticks == _INFINITE_TICKS[0]) | (timed_ticks == _INFINITE_TICKS[1]))):
        return None
    n = len(ticks)
    of_row = np.full(n, -1, dtype=np.int64)
    if not timed.any():
        return _Windows(np.zeros(0, dtype=np.int64), of_row, n)
    keys = timed_ticks - timed_ticks % size  # NumPy's % floors: instants before 1970 too
    starts, of_row[timed] = distinct_keys(keys, size)
    return _Windows(starts, of_row, n - int(np.count_nonzero(timed)))


def _count(index: np.ndarray, where: np.ndarray, windows: int) -> np.ndarray:
    return np.bincount(index[where], minlength=windows)


def _cells(window_of: np.ndarray, bins: np.ndarray, weights: list[np.ndarray]) -> list[np.ndarray]:
    """Distinct (window, bin) pairs, ascending, with their row count and the sums of ``weights``.

    Returns:
        ``[windows, bins, counts, *sums]``.
    """
    if not len(bins):
        empty = np.zeros(0, dtype=np.int64)
        return [empty, empty, empty, *(np.zeros(0) for _ in weights)]
    low = int(bins.min())
    width = int(bins.max()) - low + 1
    cells = (int(window_of.max()) + 1) * width
    keys = window_of * width + (bins - low)
    if cells <= _DENSE_CELLS:
        counts = np.bincount(keys, minlength=cells)
        present = np.flatnonzero(counts)
        sums = [np.bincount(keys, weights=w, minlength=cells)[present] for w in weights]
        counts = counts[present]
    else:
        present, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        sums = [np.bincount(inverse, weights=w, minlength=len(present)) for w in weights]
    return [present // width, present % width + low, counts, *sums]


def _column(values: np.ndarray, valid: np.ndarray | None, kind: pa.DataType) -> pa.Array:
    mask = None if valid is None else ~valid
    if pa.types.is_timestamp(kind):
        return pa.array(values.astype(np.int64), pa.int64(), mask=mask).view(kind)
    return pa.array(values, kind, mask=mask)


def _assemble(
    schema: pa.Schema,
    n_rows: int,
    columns: dict[str, tuple[np.ndarray, np.ndarray | None]],
    order: np.ndarray,
) -> pa.Table:
    """A table of ``schema`` from NumPy columns (values, validity or ``None``: all valid; absent:
    all NULL), its rows taken in ``order``."""
    arrays = []
    for field in schema:
        if field.name in columns:
            values, valid = columns[field.name]
            arrays.append(_column(values[order], None if valid is None else valid[order], field.type))
        else:
            arrays.append(pa.nulls(n_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _pieces(
    parts: list[dict[str, tuple[np.ndarray, np.ndarray | None]]], lengths: list[int]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stack the columns of row groups; a group without a column has it NULL there."""
    names = {name for part in parts for name in part}
    stacked: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name in names:
        dtype = next(np.asarray(part[name][0]).dtype for part in parts if name in part)
        values, valid = [], []
        for part, length in zip(parts, lengths, strict=True):
            if name in part:
                v, ok = part[name]
                values.append(np.asarray(v, dtype=dtype))
                valid.append(np.ones(length, dtype=bool) if ok is None else ok)
            else:
                values.append(np.zeros(length, dtype=dtype))
                valid.append(np.zeros(length, dtype=bool))
        stacked[name] = (np.concatenate(values), np.concatenate(valid))
    return stacked


def latency_partial_of(table: pa.Table, window: str, schema: pa.Schema, ln_gamma: float) -> pa.Table | None:
    """``analytics.performance.latency_partial`` of a table's rows, or ``None`` (see the module doc).

    Args:
        table: Inference logs with ``timestamp`` and ``latency_ms``.
        window: Window unit.
        schema: ``LATENCY_PARTIAL_SCHEMA``.
        ln_gamma: ``ln`` of the bins' ratio (a latency ``x > 0`` is in bin ``ceil(ln(x) / ln_gamma)``).
    """
    windows = _windows(table, window)
    if windows is None or "latency_ms" not in table.column_names:
        return None
    latency_array = _array(table, "latency_ms")
    if not _is_number(latency_array.type):
        return None
    latency, present = _doubles(latency_array)
    timed = windows.of_row >= 0
    index, latency, present = windows.of_row[timed], latency[timed], present[timed]
    count = len(windows.starts)
    with np.errstate(invalid="ignore"):
        ok = present & np.isfinite(latency) & (latency >= 0)
    good_index, good = index[ok], latency[ok]
    n_latency = np.bincount(good_index, minlength=count)
    lows, highs = np.full(count, np.inf), np.full(count, -np.inf)
    np.minimum.at(lows, good_index, good)
    np.maximum.at(highs, good_index, good)
    has_latency = n_latency > 0
    summary = {
        "window_start": (windows.starts, None),
        "n": (np.bincount(index, minlength=count), None),
        "n_latency": (n_latency, None),
        "n_zero": (_count(good_index, good == 0, count), None),
        "sum_ms": (np.bincount(good_index, weights=good, minlength=count), has_latency),
        "min_ms": (lows + 0.0, has_latency),
        "max_ms": (highs + 0.0, has_latency),
    }
    positive = good > 0
    bins = np.ceil(_ln(good[positive]) / ln_gamma).astype(np.int64)
    cell_window, cell_bin, cell_count = _cells(good_index[positive], bins, [])
    binned = {
        "window_start": (windows.starts[cell_window], None),
        "bin": (cell_bin, None),
        "count": (cell_count, None),
    }
    parts, lengths = [summary, binned], [count, len(cell_bin)]
    if windows.missing:
        parts.append(
            {
                "window_start": (np.zeros(1, dtype=np.int64), np.zeros(1, dtype=bool)),
                "n": (np.array([windows.missing]), None),
            }
        )
        lengths.append(1)
    rows = _pieces(parts, lengths)
    # ORDER BY window_start NULLS FIRST, bin NULLS FIRST (the rows without a timestamp first).
    starts_valid = rows["window_start"][1]
    order = np.lexsort(
        (
            np.where(rows["bin"][1], rows["bin"][0], np.iinfo(np.int64).min),
            rows["bin"][1],
            np.where(starts_valid, rows["window_start"][0], 0),
            starts_valid,
        )
    )
    return _assemble(schema, sum(lengths), rows, order)


@dataclass(frozen=True)
class _Joined:
    """The rows of some logs that have a timestamp, each with its label (the query's left join).

    Attributes:
        windows: The logs' windows.
        index: Each row's window.
        values: Each row's ``score`` or ``prediction`` as a double (anything where missing).
        present: Whether ``values`` is there.
        label: Each row's label (anything where it has none or its label is missing).
        labelled: A label matched and usable: not NULL and, as a double, finite.
        bad_label: A label matched but unusable.
    """

    windows: _Windows
    index: np.ndarray
    values: np.ndarray
    present: np.ndarray
    label: np.ndarray
    labelled: np.ndarray
    bad_label: np.ndarray

    @property
    def count(self) -> int:
        """Number of windows."""
        return len(self.windows.starts)


def _join(
    logs: pa.Table, labels: pa.Table, window: str, column: str, labels_as_doubles: bool
) -> _Joined | None:
    """The timed rows of ``logs`` with ``column`` and their labels, or ``None`` (see the module doc).

    Labels stay integers unless ``labels_as_doubles``, so that comparing them with the positive
    class is exact, as in the query; a regression casts them to ``DOUBLE``.
    """
    windows = _windows(logs, window)
    if windows is None or not {"request_id", column} <= set(logs.column_names):
        return None
    ids, label_ids = _array(logs, "request_id"), _array(labels, "request_id")
    value_array, label_array = _array(logs, column), _array(labels, "label")
    if not (
        all(pa.types.is_string(a.type) or pa.types.is_large_string(a.type) for a in (ids, label_ids))
        and _is_number(value_array.type)
        and _is_number(label_array.type)
    ):
        return None
    if pa.types.is_floating(label_array.type) or labels_as_doubles:
        label, label_present = _doubles(label_array)
    elif label_array.type == pa.uint64():
        return None  # beyond int64: left to the query
    else:
        label, label_present = _values(label_array.cast(pa.int64()), np.int64)
    joined = _label_positions(ids, label_ids)
    if joined is None:
        return None  # a request labelled twice: the query's join repeats its row
    position, matched = joined
    values, present = _doubles(value_array)
    timed = windows.of_row >= 0
    matched, position = matched[timed], position[timed]
    if len(label):
        usable = label_present & np.isfinite(label) if label.dtype.kind == "f" else label_present
        at = np.where(matched, position, 0)
        row_label, row_usable = label[at], usable[at]
    else:
        row_label, row_usable = np.zeros(len(matched)), np.zeros(len(matched), dtype=bool)
    return _Joined(
        windows,
        windows.of_row[timed],
        values[timed],
        present[timed],
        row_label,
        matched & row_usable,
        matched & ~row_usable,
    )


def classification_partial_of(
    logs: pa.Table,
    labels: pa.Table,
    window: str,
    positive_label: Any,
    threshold: float | None,
    schema: pa.Schema,
    score_bins: tuple[int, int],
    log_loss_eps: float,
) -> tuple[pa.Table, int] | None:
    """``analytics.performance.classification_partial`` of Arrow tables, or ``None`` (module doc).

    Returns:
        The partial's rows but the ``missing_timestamp`` one, which the caller appends as for the
        query's, and the number of rows without a timestamp; ``None`` where the query must run.

    Args:
        logs: Inference logs with ``request_id``, ``timestamp`` and ``score``.
        labels: Labels with ``request_id`` and ``label``.
        window: Window unit.
        positive_label: The positive class (a number).
        threshold: Score threshold of a positive prediction.
        schema: ``CLASSIFICATION_PARTIAL_SCHEMA``.
        score_bins: Bins of the AUC rows and of the calibration (ECE) rows.
        log_loss_eps: Clipping of the probabilities in the log loss.
    """
    if threshold is None or isinstance(positive_label, bool) or not isinstance(positive_label, int | float):
        return None
    joined = _join(logs, labels, window, "score", labels_as_doubles=False)
    if joined is None:
        return None
    windows, index, count, score = joined.windows, joined.index, joined.count, joined.values
    labelled, bad_label = joined.labelled, joined.bad_label
    with np.errstate(invalid="ignore"):
        score_ok = joined.present & np.isfinite(score) & (score >= 0) & (score <= 1)
        evaluated = labelled & score_ok
        actual = evaluated & (joined.label == positive_label)
        predicted = score >= float(threshold)
    evaluated_index = index[evaluated]
    score_e, actual_e = score[evaluated], actual[evaluated]
    n_evaluated = np.bincount(evaluated_index, minlength=count)
    n_positive = _count(index, actual, count)
    probability = np.where(actual_e, score_e, 1.0 - score_e)
    clipped = np.maximum(np.minimum(probability, 1.0 - log_loss_eps), log_loss_eps)
    log_loss = -_ln(clipped)
    window_rows = {
        "window_start": (windows.starts, None),
        "n": (np.bincount(index, minlength=count), None),
        "n_labelled": (_count(index, labelled, count), None),
        "n_invalid_label": (_count(index, bad_label, count), None),
        "n_invalid_score": (_count(index, ~score_ok, count), None),
        "n_evaluated": (n_evaluated, None),
        "n_positive": (n_positive, None),
        "n_negative": (n_evaluated - n_positive, None),
        "tp": (_count(index, actual & predicted, count), None),
        "fp": (_count(index, evaluated & ~actual & predicted, count), None),
        "tn": (_count(index, evaluated & ~actual & ~predicted, count), None),
        "fn": (_count(index, actual & ~predicted, count), None),
        "log_loss_sum": (np.bincount(evaluated_index, weights=log_loss, minlength=count), n_evaluated > 0),
    }
    parts = [window_rows]
    lengths = [count]
    kinds = [np.full(count, 2)]  # ORDER BY kind DESC: window, ece, auc
    positives = actual_e.astype(np.float64)
    for rank, bins in ((0, score_bins[0]), (1, score_bins[1])):
        score_bin = np.minimum(np.floor(score_e * bins), bins - 1).astype(np.int64)
        weights = [positives, score_e] if rank == 1 else [positives]
        cell_window, cell_bin, cell_count, pos, *rest = _cells(evaluated_index, score_bin, weights)
        pos = pos.astype(np.int64)
        part = {
            "window_start": (windows.starts[cell_window], None),
            "bin": (cell_bin, None),
            "pos": (pos, None),
            "neg": (cell_count - pos, None),
        }
        if rest:
            part["score_sum"] = (rest[0], None)
        parts.append(part)
        lengths.append(len(cell_bin))
        kinds.append(np.full(len(cell_bin), rank))
    rows = _pieces(parts, lengths)
    kind = np.concatenate(kinds)
    bins_valid = rows["bin"][1]
    order = np.lexsort(
        (
            np.where(bins_valid, rows["bin"][0], np.iinfo(np.int64).min),
            bins_valid,
            -kind,
            rows["window_start"][0],
        )
    )
    total = sum(lengths)
    names = np.array(["auc", "ece", "window"], dtype=object)
    table = _assemble(schema, total, rows, order)
    table = table.set_column(
        schema.get_field_index("kind"), schema.field("kind"), pa.array(names[kind[order]], pa.string())
    )
    return table, windows.missing


def regression_partial_of(
    logs: pa.Table, labels: pa.Table, window: str, schema: pa.Schema, mape_eps: float
) -> tuple[pa.Table, int] | None:
    """``analytics.performance.regression_partial`` of Arrow tables, or ``None`` (module doc).

    Returns:
        As :func:`classification_partial_of`: the rows but the one of the rows without a timestamp,
        and their number.

    Args:
        logs: Inference logs with ``request_id``, ``timestamp`` and ``prediction``.
        labels: Labels with ``request_id`` and ``label``.
        window: Window unit.
        schema: ``REGRESSION_PARTIAL_SCHEMA``.
        mape_eps: Floor of the absolute percentage error's denominator.
    """
    joined = _join(logs, labels, window, "prediction", labels_as_doubles=True)
    if joined is None:
        return None
    windows, index, count = joined.windows, joined.index, joined.count
    prediction_ok = joined.present & np.isfinite(joined.values)
    evaluated = joined.labelled & prediction_ok
    at, label = index[evaluated], joined.label[evaluated]
    with np.errstate(over="ignore", invalid="ignore"):
        error = np.abs(label - joined.values[evaluated])
        n_evaluated = np.bincount(at, minlength=count)
        has = n_evaluated > 0
        nonzero = label != 0
        n_mape = _count(at, nonzero, count)
        # The second pass of the query: deviations from the window's mean, which the first gives.
        mean = np.bincount(at, weights=label, minlength=count) / np.maximum(n_evaluated, 1)
        lows, highs = np.full(count, np.inf), np.full(count, -np.inf)
        np.minimum.at(lows, at, label)
        np.maximum.at(highs, at, label)
        columns = {
            "window_start": (windows.starts, None),
            "n": (np.bincount(index, minlength=count), None),
            "n_labelled": (_count(index, joined.labelled, count), None),
            "n_invalid_label": (_count(index, joined.bad_label, count), None),
            "n_invalid_prediction": (_count(index, ~prediction_ok, count), None),
            "n_evaluated": (n_evaluated, None),
            "abs_sum": (np.bincount(at, weights=error, minlength=count), has),
            "sq_sum": (np.bincount(at, weights=error * error, minlength=count), has),
            "ape_sum": (
                np.bincount(
                    at[nonzero],
                    weights=error[nonzero] / np.maximum(np.abs(label[nonzero]), mape_eps),
                    minlength=count,
                ),
                n_mape > 0,
            ),
            "n_mape": (n_mape, has),
            "n_mape_skipped": (n_evaluated - n_mape, has),
            "label_mean": (mean, has),
            "label_m2": (np.bincount(at, weights=(label - mean[at]) ** 2, minlength=count), has),
            "label_min": (lows + 0.0, has),
            "label_max": (highs + 0.0, has),
        }
    return _assemble(schema, count, columns, np.arange(count)), windows.missing
