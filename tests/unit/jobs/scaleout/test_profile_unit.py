"""The map task: one unit's partial profile, where it may be written, and the ``profile-unit`` command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from analytics.performance import classification_from_partials, latency_from_partials
from analytics.profile import profile
from analytics.store import ParquetStore, read_source
from jobs.cli import EXIT_FAILURE, EXIT_OK, main
from jobs.contracts import INFERENCE_LOGS
from jobs.scaleout.profile_unit import (
    PARTIAL_METADATA,
    load_specs,
    partial_aggregates,
    partial_info,
    partial_profiles,
    partial_segments,
    profile_unit,
    run_manifest,
    run_unit,
    task_connection,
)
from jobs.scaleout.units import RunPlan, ScaleoutError, plan_run
from tests.unit.jobs.scaleout import support

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ParquetStore:
    """One workspace for the module; tests that change files make their own."""
    opened = support.make_store(support.local_config(tmp_path_factory.mktemp("shared") / "data"))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def plan(store: ParquetStore) -> RunPlan:
    return plan_run(store, support.REQUEST, unit_bytes=1, run_id="unit-tests")


def unit_of(plan: RunPlan, day_index: int, name: str):
    day = support.DAYS[day_index].isoformat()
    return next(u for u in plan.units if u.date == day and u.files[0].path.endswith("/" + name))


def test_a_partial_equals_a_duckdb_scan_of_its_files(store: ParquetStore, plan: RunPlan) -> None:
    # Day 2, file a: NaN, +inf and -inf in num_c and an all-null numeric column.
    unit = unit_of(plan, 1, "a.parquet")
    specs = load_specs(store, unit)
    partial = profile_unit(unit, specs, store.config)
    got = partial_profiles(partial)
    assert sorted(got) == ["1"]
    relation = read_source(store.cursor(), [f.path for f in unit.files]).filter("version = '1'")
    want = profile(relation, specs["1"], window="day", timestamp_column="timestamp")
    assert list(got["1"]) == list(want)
    for window, expected in want.items():
        support.assert_same_profile(got["1"][window], expected, schema=False)
    column = got["1"][next(iter(want))]
    assert (column["num_c"].nan, column["num_c"].pos_inf, column["num_c"].neg_inf) == (2, 2, 1)
    assert column["sparse"].nulls == column["sparse"].rows == 200
    info = partial_info(partial)
    assert (info["unit_id"], info["index"], info["rows"], info["problems"]) == (
        unit.unit_id,
        unit.index,
        200,
        [],
    )


def test_a_unit_with_two_versions_profiles_each_on_its_spec(store: ParquetStore, plan: RunPlan) -> None:
    unit = unit_of(plan, 2, "a.parquet")
    got = partial_profiles(profile_unit(unit, load_specs(store, unit), store.config))
    assert sorted(got) == ["1", "2"]
    (v1,) = got["1"].values()
    (v2,) = got["2"].values()
    assert (v1.rows, v2.rows) == (110, 70)
    assert v1.spec != v2.spec
    assert v1["cat_a"].other_count > 0 and ("purple", v1["cat_a"].other_count) in v1["cat_a"].unseen


def test_a_file_without_rows_gives_a_partial_without_profiles(store: ParquetStore, plan: RunPlan) -> None:
    unit = unit_of(plan, 0, "b.parquet")
    partial = profile_unit(unit, load_specs(store, unit), store.config)
    assert partial.num_rows == 0 and partial_profiles(partial) == {}
    assert partial_info(partial)["rows"] == 0


def test_a_version_without_a_reference_is_counted_not_profiled(store: ParquetStore, plan: RunPlan) -> None:
    unit = unit_of(plan, 2, "a.parquet")
    specs = load_specs(store, unit)
    del specs["2"]
    partial = profile_unit(unit, specs, store.config)
    assert sorted(partial_profiles(partial)) == ["1"]
    assert partial_info(partial)["versions"] == ["1", "2"]


def test_a_broken_file_is_reported_and_nothing_is_profiled(tmp_path: Path) -> None:
    store = support.make_store(support.local_config(tmp_path / "data"))
    plan = plan_run(store, support.REQUEST, unit_bytes=1, run_id="broken")
    unit = unit_of(plan, 0, "a.parquet")
    path = Path(unit.files[0].path)
    table = pq.read_table(path).drop_columns(["latency_ms"])
    pq.write_table(table, path)
    partial = profile_unit(unit, load_specs(store, unit), store.config)
    info = partial_info(partial)
    assert partial_profiles(partial) == {}
    assert [(p["kind"], p["column"]) for p in info["problems"]] == [("schema", "latency_ms")]


def test_the_task_opens_duckdb_with_the_unit_limits(store: ParquetStore, plan: RunPlan) -> None:
    unit = replace(unit_of(plan, 0, "a.parquet"), duckdb_memory_limit="lots of memory")
    with pytest.raises(ScaleoutError, match="lots of memory"):
        profile_unit(unit, load_specs(store, unit), store.config)


def test_files_outside_the_root_are_refused(store: ParquetStore, plan: RunPlan, tmp_path: Path) -> None:
    unit = unit_of(plan, 0, "a.parquet")
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"x": [1]}), outside)
    forged = replace(unit, files=(replace(unit.files[0], path=str(outside)),))
    with pytest.raises(ScaleoutError, match="outside the data root"):
        profile_unit(forged, load_specs(store, unit), store.config)


def test_run_unit_writes_its_deterministic_key_only(store: ParquetStore) -> None:
    plan = plan_run(store, support.REQUEST, unit_bytes=1, run_id="deterministic-key")
    unit = plan.units[2]
    result = run_unit(unit, store.config)
    assert result.out == plan.layout.partial(unit.index)
    first = pq.read_table(result.out)
    again = run_unit(unit, store.config)
    assert again.out == result.out
    assert partial_profiles(pq.read_table(again.out)).keys() == partial_profiles(first).keys()
    assert support.partial_files(store, plan.run_id) == [f"{unit.index}.parquet"]
    for bad in (
        f"{plan.layout.run_dir}/elsewhere.parquet",
        f"{plan.layout.units_dir}/nested/x.parquet",
        f"{plan.layout.units_dir}/x.json",
        f"{store.root}/{INFERENCE_LOGS}/x.parquet",
    ):
        with pytest.raises(ScaleoutError, match=r"must be a \.parquet file directly inside"):
            run_unit(unit, store.config, out=bad)


def test_specs_must_come_from_the_run(store: ParquetStore, plan: RunPlan) -> None:
    unit = plan.units[0]
    ref = unit.specs["1"]
    forged = replace(unit, specs={"1": replace(ref, uri=f"{store.root}/elsewhere/{ref.sha256}.parquet")})
    with pytest.raises(ScaleoutError, match="not inside run"):
        load_specs(store, forged)


def test_manifests_must_live_in_their_run(store: ParquetStore, plan: RunPlan, tmp_path: Path) -> None:
    manifest = plan.layout.manifest(0)
    copy = f"{plan.layout.run_dir}/copied.json"
    Path(copy).write_bytes(Path(manifest).read_bytes())
    with pytest.raises(ScaleoutError, match="is not inside"):
        run_manifest(copy, store.config)
    with pytest.raises(ScaleoutError, match="does not exist"):
        run_manifest(f"{plan.layout.manifests_dir}/missing.json", store.config)
    with pytest.raises(ScaleoutError, match="outside the data root"):
        run_manifest(str(tmp_path / "x.json"), store.config)


def test_the_profile_unit_command(store: ParquetStore, plan: RunPlan, tmp_path: Path, capsys) -> None:
    environ = {"MMS_DATA_URI": store.root, "MMS_VAR_DIR": str(tmp_path / "var"), "MMS_DUCKDB_THREADS": "1"}
    unit = plan.units[1]
    out = plan.layout.partial(unit.index)
    code = main(["profile-unit", "--manifest", plan.layout.manifest(unit.index), "--out", out], environ)
    assert code == EXIT_OK, capsys.readouterr()
    assert f"unit {unit.index} ({unit.unit_id[:12]})" in capsys.readouterr().out
    assert PARTIAL_METADATA in pq.read_schema(out).metadata
    code = main(["profile-unit", "--manifest", f"{plan.layout.manifests_dir}/nope.json"], environ)
    assert code == EXIT_FAILURE
    assert "does not exist" in capsys.readouterr().out


def test_the_task_connection_reads_no_file_and_stays_locked(tmp_path: Path) -> None:
    con = task_connection(1, "256MB")
    try:
        assert (
            con.execute("SELECT current_setting('threads'), current_setting('memory_limit')").fetchone()[0]
            == 1
        )
        outside = tmp_path / "x.parquet"
        pq.write_table(pa.table({"x": [1]}), outside)
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_parquet('{outside}')")
        with pytest.raises(duckdb.InvalidInputException, match="Cannot change configuration"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_a_partial_carries_the_aggregates_of_the_reference_task(store: ParquetStore, plan: RunPlan) -> None:
    """Window counts, latency and the task's performance, joined with the labels of the date."""
    unit = unit_of(plan, 2, "a.parquet")  # versions 1 and 2, labels for every other request
    assert {v: ref.task for v, ref in unit.specs.items()} == {"1": "classification", "2": "classification"}
    partial = profile_unit(unit, load_specs(store, unit), store.config)
    info, aggregates = partial_info(partial), partial_aggregates(partial)
    assert info["tasks"] == {"1": ["classification"], "2": ["classification"]}
    assert info["labels_sha256"] and info["aggregate_errors"] == {}
    logs = pq.read_table(unit.files[0].path)
    # Rows 0-109 are version 1, rows 110-179 version 2; every other row of the file is labelled.
    for version, rows, labelled in (("1", 110, 55), ("2", 70, 35)):
        assert sorted(aggregates[version]) == ["classification", "counts", "latency"]
        assert aggregates[version]["counts"].column("rows").to_pylist() == [rows]
        latency = latency_from_partials([aggregates[version]["latency"]]).windows[0]
        assert latency.n == latency.n_latency == rows
        mine = logs.filter(pc.equal(logs.column("version"), version)).column("latency_ms").to_numpy()
        assert latency.max_ms == mine.max()
        performance = classification_from_partials([aggregates[version]["classification"]]).windows[0]
        assert (performance.n, performance.n_labelled, performance.n_evaluated) == (rows, labelled, labelled)


def test_a_version_without_a_labelled_reference_gets_both_tasks(store: ParquetStore, plan: RunPlan) -> None:
    unit = unit_of(plan, 2, "a.parquet")
    unit = replace(unit, specs={v: replace(ref, task=None) for v, ref in unit.specs.items()})
    partial = profile_unit(unit, load_specs(store, unit), store.config)
    assert partial_info(partial)["tasks"]["1"] == ["classification", "regression"]
    assert sorted(partial_aggregates(partial)["1"]) == ["classification", "counts", "latency", "regression"]


def test_a_partial_carries_the_segment_partials_of_every_value_it_can_slice(
    store: ParquetStore, plan: RunPlan
) -> None:
    """File ``c`` of day 1: its 12 stores are kept (the day's 24 are for the merge to see)."""
    unit = unit_of(plan, 0, "c.parquet")
    segments = partial_segments(profile_unit(unit, load_specs(store, unit), store.config))
    assert sorted(segments) == ["1"]
    partials = segments["1"]
    values = {column: found for (column, _window), found in partials.values.items()}
    assert values["segment_store"] == {f"s{i}" for i in range(12, 24)}
    assert values["segment_user"] is None  # 30 users in the file: never sliced, whatever the others hold
    assert values["segment_region"] == {"north", "south", "east"}
    sliced = {(column, value) for column, value, _window in partials.profiles}
    assert sliced == {("segment_store", v) for v in values["segment_store"]} | {
        ("segment_region", v) for v in values["segment_region"]
    }
    logs = support.log_table(support.DAYS[0], "c.parquet", {"1": 130}, frozenset())
    north = [r for r in logs.column("segment_region").to_pylist() if r == "north"]
    window = next(w for c, v, w in partials.profiles if (c, v) == ("segment_region", "north"))
    assert partials.profiles[("segment_region", "north", window)].rows == len(north)
    assert set(partials.performance) == {"classification"}
