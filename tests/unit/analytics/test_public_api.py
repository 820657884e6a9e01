"""The notebook-facing surface of ``analytics`` resolves to real objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analytics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", analytics.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(analytics, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = analytics.no_such_thing


def test_import_does_not_load_plotly_until_figures_are_used() -> None:
    code = (
        "import sys, analytics; a = 'plotly' in sys.modules; analytics.figures; "
        "import analytics.profile; print(a, 'plotly' in sys.modules, callable(analytics.profile))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True"]


def test_profile_and_drift_through_the_public_names(tmp_path: Path) -> None:
    n = 4000
    reference = pa.table(
        {"x": [float(i % 100) for i in range(n)], "c": [("a", "b")[i % 2] for i in range(n)]}
    )
    current = pa.table({"x": [float(i % 100) + 60.0 for i in range(n)], "c": ["a"] * n})
    pq.write_table(reference, tmp_path / "reference.parquet")
    pq.write_table(current, tmp_path / "current.parquet")
    con = analytics.connect_duckdb(analytics.StoreConfig(data_uri=str(tmp_path)))
    ref_rel = analytics.read_source(con, str(tmp_path / "reference.parquet"))
    cur_rel = analytics.read_source(con, str(tmp_path / "current.parquet"))
    spec = analytics.build_spec(ref_rel)
    report = analytics.drift(analytics.profile(ref_rel, spec), analytics.profile(cur_rel, spec))
    frame = report.to_pandas()
    drifted = dict(zip(frame["column"], frame["drifted"], strict=True))
    assert drifted == {"x": True, "c": True}
