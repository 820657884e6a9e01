"""Data quality: missing share, out-of-range, new categories, schema drift, freshness."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.profile import ProfileError, profile, profile_reference, relation_schema
from analytics.quality import freshness, quality, schema_drift

pytestmark = pytest.mark.unit


def write(tmp_path: Path, name: str, columns: dict) -> Path:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def relation(path: Path) -> duckdb.DuckDBPyRelation:
    return duckdb.connect().read_parquet(str(path))


def test_missing_out_of_range_and_new_categories(tmp_path: Path) -> None:
    ref = write(
        tmp_path,
        "ref",
        {"x": pa.array(np.linspace(0.0, 10.0, 101)), "c": pa.array(["a", "b", "c"] * 33 + ["a", "b"])},
    )
    current_x = [-1.0, 0.0, 5.0, 10.0, 10.5, math.inf, -math.inf, math.nan, None, 3.0]
    current_c = ["a", "a", "d", "d", "d", "e", None, "b", "c", "a"]
    cur = write(tmp_path, "cur", {"x": pa.array(current_x, pa.float64()), "c": pa.array(current_c)})
    reference = profile_reference(relation(ref))
    report = quality(reference, profile(relation(cur), reference.spec))
    x = report["x"]
    assert (x.rows, x.nulls, x.nan, x.neg_inf, x.pos_inf) == (10, 1, 1, 1, 1)
    assert x.missing_share == pytest.approx(0.2)
    # -1, 10.5, +inf and -inf lie outside [0, 10]; 0 and 10 (the bounds) are inside.
    assert x.out_of_range == 4 and x.out_of_range_share == pytest.approx(4 / 8)
    assert (x.range_low, x.range_high) == (0.0, 10.0)
    c = report["c"]
    assert c.missing_share == pytest.approx(0.1)
    assert c.new_categories == ("d", "e") and c.new_categories_exact
    assert c.new_category_share == pytest.approx(4 / 9)
    assert c.out_of_range is None
    assert all(column.status == "ok" for column in report.columns)


def test_schema_drift_lists_missing_new_and_retyped_columns(tmp_path: Path) -> None:
    ref = write(tmp_path, "ref", {"a": [1.0], "b": [1], "c": ["x"]})
    cur = write(tmp_path, "cur", {"a": [1.0], "b": ["1"], "d": [True]})
    reference = profile_reference(relation(ref))
    current = profile(relation(cur), reference.spec)
    report = quality(reference, current)
    assert report.schema.missing == ("c",)
    assert report.schema.new == ("d",)
    assert report.schema.retyped == (("b", "BIGINT", "VARCHAR"),)
    assert report.schema.drifted
    assert report["b"].status == "error" and "changed type from BIGINT to VARCHAR" in report["b"].reason
    assert report["c"].status == "error" and "not profiled in the current" in report["c"].reason
    assert schema_drift(relation_schema(relation(ref)), dict(relation_schema(relation(ref)))).drifted is False


def test_empty_and_all_null_current_data_is_insufficient(tmp_path: Path) -> None:
    ref = write(tmp_path, "ref", {"x": [1.0, 2.0], "c": ["a", "b"]})
    cur = write(
        tmp_path, "cur", {"x": pa.array([None, None], pa.float64()), "c": pa.array([None, None], pa.string())}
    )
    reference = profile_reference(relation(ref))
    report = quality(reference, profile(relation(cur), reference.spec))
    assert report["x"].status == "insufficient_data" and report["x"].missing_share == 1.0
    assert report["x"].out_of_range_share is None
    empty = quality(reference, profile(relation(cur).filter("false"), reference.spec))
    assert empty["c"].status == "insufficient_data" and "no rows" in empty["c"].reason
    assert empty["c"].missing_share is None


def test_freshness_of_naive_and_zoned_timestamps(tmp_path: Path) -> None:
    latest = datetime(2024, 6, 1, 12, 0)
    naive = write(tmp_path, "naive", {"ts": pa.array([latest - timedelta(hours=5), latest, None])})
    now = datetime(2024, 6, 1, 14, 30, tzinfo=UTC)
    result = freshness(relation(naive), "ts", now=now)
    assert result.latest == latest.replace(tzinfo=UTC)
    assert result.age_seconds == pytest.approx(2.5 * 3600)
    assert result.rows == 2
    paris = timezone(timedelta(hours=2))
    zoned = write(
        tmp_path,
        "zoned",
        {"ts": pa.array([datetime(2024, 6, 1, 16, 0, tzinfo=paris)], pa.timestamp("us", tz="UTC"))},
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Asia/Tokyo'")  # the session zone does not matter
    assert freshness(con.read_parquet(str(zoned)), "ts", now=now).age_seconds == pytest.approx(30 * 60)
    empty = freshness(relation(naive).filter("false"), "ts", now=now)
    assert (empty.latest, empty.age_seconds, empty.rows) == (None, None, 0)
    dates = write(tmp_path, "dates", {"d": pa.array([datetime(2024, 5, 31).date()])})
    assert freshness(relation(dates), "d", now=now).age_seconds == pytest.approx(38.5 * 3600)
    with pytest.raises(ProfileError, match="not a date"):
        freshness(relation(write(tmp_path, "n", {"x": [1]})), "x")
    with pytest.raises(ProfileError, match="not in the relation"):
        freshness(relation(naive), "nope")


def test_quality_report_converts_to_frames_and_json(tmp_path: Path) -> None:
    ref = write(tmp_path, "ref", {"x": [1.0, 2.0, 3.0], "ts": [datetime(2024, 1, 1)] * 3})
    reference = profile_reference(relation(ref), exclude=["ts"])
    current = profile(relation(ref), reference.spec)
    report = quality(reference, current, freshness=freshness(relation(ref), "ts", now=datetime(2024, 1, 2)))
    frame = report.to_pandas()
    assert list(frame["column"]) == ["x"] and frame["out_of_range"].tolist() == [0]
    assert report.to_polars().height == 1
    data = report.to_json_dict()
    assert data["freshness"]["latest"] == "2024-01-01T00:00:00+00:00"
    assert data["freshness"]["age_seconds"] == 86400.0
    assert data["schema"]["drifted"] is False
