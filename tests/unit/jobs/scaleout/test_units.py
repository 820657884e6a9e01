"""Planning a scaled-out run: sizes, packing, deterministic units, the run's files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from analytics.store import ParquetStore, StoredFile
from jobs.contracts import INFERENCE_LOGS
from jobs.monitor import MonitorRequest
from jobs.permissions import Forbidden
from jobs.scaleout.units import (
    MANIFEST_DIGITS,
    RunLayout,
    ScaleoutError,
    UnitFile,
    WorkUnit,
    check_run_id,
    files_digest,
    list_folder,
    load_plan,
    pack_files,
    parse_bytes,
    plan_run,
    read_json,
    read_spec,
    reference_spec,
    spec_digest,
    write_bytes_atomically,
)
from tests.unit.jobs.scaleout import support

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> ParquetStore:
    opened = support.make_store(support.local_config(tmp_path / "data"))
    yield opened
    opened.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MB", 512_000_000),
        ("64MiB", 64 * 1024**2),
        ("1.5GB", 1_500_000_000),
        ("2kib", 2048),
        ("1000", 1000),
        (7, 7),
    ],
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12 parsecs", "-5MB", "0", True, "0.1B"])
def test_parse_bytes_refuses_nonsense(text: object) -> None:
    with pytest.raises(ScaleoutError, match="byte size"):
        parse_bytes(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("run_id", ["", "../x", "a/b", "-lead", "x" * 65, "run id"])
def test_run_ids_cannot_escape_their_folder(run_id: str) -> None:
    with pytest.raises(ScaleoutError, match="invalid run id"):
        check_run_id(run_id)


def test_packing_keeps_path_order_and_the_limit() -> None:
    files = [
        UnitFile(f"/d/{name}", size) for name, size in [("c", 40), ("a", 60), ("b", 30), ("d", 0), ("e", 500)]
    ]
    groups = pack_files(files, 100)
    assert [[f.path[-1] for f in g] for g in groups] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(sum(f.size for f in g) <= 100 for g in groups[:2])  # only the oversized file exceeds it
    assert [[f.path[-1] for f in g] for g in pack_files(files, 1)] == [["a"], ["b"], ["c", "d"], ["e"]]
    with pytest.raises(ScaleoutError):
        pack_files(files, 0)


def test_the_unit_id_is_a_digest_of_relative_paths_and_sizes() -> None:
    files = [UnitFile("/root/x/b.parquet", 2), UnitFile("/root/x/a.parquet", 1)]
    assert files_digest(files, "/root") == files_digest(list(reversed(files)), "/root/")
    assert files_digest(files, "/root") == files_digest(
        [UnitFile("/elsewhere/x/a.parquet", 1), UnitFile("/elsewhere/x/b.parquet", 2)], "/elsewhere"
    )
    assert files_digest(files, "/root") != files_digest([UnitFile("/root/x/a.parquet", 1)], "/root")
    assert files_digest(files, "/root") != files_digest(
        [UnitFile("/root/x/a.parquet", 1), UnitFile("/root/x/b.parquet", 3)], "/root"
    )
    # The same text as the monitoring job's fingerprint, which compares the two.
    from jobs import _monitor_inputs

    store = ParquetStore(support.local_config(Path("/root")))
    stored = [StoredFile(f.path, f.size, {}) for f in files]
    assert files_digest(files, "/root") == _monitor_inputs.fingerprint(store, stored)


def test_plan_packs_each_date_separately_and_writes_the_run(store: ParquetStore) -> None:
    plan = plan_run(store, support.REQUEST, unit_bytes=1, run_id="run-1")
    listed = store.list_files(INFERENCE_LOGS)
    # unit_bytes=1: every file is a unit (the file without rows still has a footer of some bytes).
    assert len(plan.units) == len(listed)
    assert sorted(f.path for u in plan.units for f in u.files) == sorted(f.path for f in listed)
    for unit in plan.units:
        assert {f"{s.partition['date']}" for s in listed if s.path in {f.path for f in unit.files}} == {
            unit.date
        }
    assert [u.index for u in plan.units] == list(range(len(plan.units)))
    big = plan_run(store, support.REQUEST, unit_bytes="1GB", run_id="run-2")
    assert [(u.date, len(u.files)) for u in big.units] == [
        (day.isoformat(), len(files)) for day, files in support.LAYOUT.items()
    ]
    layout = RunLayout(store.root, "run-1")
    manifests = [uri for uri, _ in list_folder(store, layout.manifests_dir)]
    assert manifests == [layout.manifest(u.index) for u in plan.units]
    assert all(Path(m).name == f"{i:0{MANIFEST_DIGITS}d}.json" for i, m in enumerate(manifests))
    listing = read_json(store, layout.run_file)
    assert [u["unit_id"] for u in listing["units"]] == [u.unit_id for u in plan.units]
    assert listing["request"]["backfill"] is True
    assert load_plan(store, "run-1") == plan


def test_units_are_deterministic_across_runs(store: ParquetStore) -> None:
    first = plan_run(store, support.REQUEST, unit_bytes=5000, run_id="first")
    second = plan_run(store, support.REQUEST, unit_bytes=5000, run_id="second")
    assert [u.unit_id for u in first.units] == [u.unit_id for u in second.units]
    assert [u.files for u in first.units] == [u.files for u in second.units]
    assert len({u.unit_id for u in first.units}) == len(first.units)


def test_filters_and_date_range_limit_the_units(store: ParquetStore) -> None:
    request = MonitorRequest(since=support.DAYS[1], until=support.DAYS[1], model=support.MODEL)
    plan = plan_run(store, request, unit_bytes="1GB", run_id="one-day")
    assert [u.date for u in plan.units] == [support.DAYS[1].isoformat()]
    nothing = plan_run(store, MonitorRequest(model="no-such-model"), run_id="empty")
    assert nothing.units == ()


def test_a_run_id_is_used_once(store: ParquetStore) -> None:
    plan_run(store, support.REQUEST, run_id="taken")
    with pytest.raises(ScaleoutError, match="exists already"):
        plan_run(store, support.REQUEST, run_id="taken")


def test_specs_are_snapshotted_without_the_label(store: ParquetStore) -> None:
    plan = plan_run(store, support.REQUEST, run_id="specs")
    refs = plan.specs[f"{support.PROJECT}/{support.MODEL}"]
    assert sorted(refs) == ["1", "2"]
    reference = support.write_reference(store, "1")
    spec = read_spec(store, refs["1"])
    assert spec == reference_spec(reference)
    assert "label" not in spec.names and "num_a" in spec.names
    assert spec_digest(spec) == refs["1"].sha256 != refs["2"].sha256
    forged = replace(refs["1"], sha256=refs["2"].sha256)
    with pytest.raises(ScaleoutError, match="does not hold spec"):
        read_spec(store, forged)


def test_manifests_round_trip_and_reject_other_formats(store: ParquetStore) -> None:
    plan = plan_run(store, support.REQUEST, unit_bytes=1, run_id="manifests")
    unit = plan.units[3]
    payload = read_json(store, plan.layout.manifest(unit.index))
    assert WorkUnit.from_json(payload) == unit
    assert json.loads(json.dumps(unit.to_json())) == payload
    with pytest.raises(ScaleoutError, match="format"):
        WorkUnit.from_json({**payload, "format": 99})
    with pytest.raises(ScaleoutError, match="malformed"):
        WorkUnit.from_json({**payload, "files": [{"path": "/x"}]})
    with pytest.raises(ScaleoutError, match="invalid run id"):
        WorkUnit.from_json({**payload, "run_id": "../other"})


def test_refused_authorization_writes_nothing(store: ParquetStore) -> None:
    seen = []

    def refuse(projects: list[str]) -> None:
        seen.append(projects)
        raise Forbidden("no run_backfill on shop")

    with pytest.raises(Forbidden):
        plan_run(store, support.REQUEST, run_id="refused", authorize=refuse)
    assert seen == [[support.PROJECT]]
    assert list_folder(store, RunLayout(store.root, "refused").run_dir) == []


def test_atomic_writes_stay_inside_the_root(store: ParquetStore, tmp_path: Path) -> None:
    with pytest.raises(ScaleoutError, match="outside the data root"):
        write_bytes_atomically(store, str(tmp_path / "elsewhere.json"), b"{}")
    with pytest.raises(ScaleoutError, match="outside the data root"):
        write_bytes_atomically(store, f"{store.root}/profiling/../../escape.json", b"{}")
    target = f"{store.root}/profiling/runs/x/note.json"
    write_bytes_atomically(store, target, b"one")
    write_bytes_atomically(store, target, b"two")
    assert Path(target).read_bytes() == b"two"
    assert list((Path(store.root) / "_staging").glob("*")) == []


def test_load_plan_checks_the_run(store: ParquetStore, tmp_path: Path) -> None:
    with pytest.raises(ScaleoutError, match="no profiling run"):
        load_plan(store, "never-planned")
    plan_run(store, support.REQUEST, run_id="moved")
    other_root = ParquetStore(support.local_config(tmp_path / "data"))
    assert load_plan(other_root, "moved").run_id == "moved"
    layout = RunLayout(store.root, "moved")
    Path(layout.manifest(0)).unlink()
    with pytest.raises(ScaleoutError, match="manifest of unit 0 is missing"):
        load_plan(store, "moved")
