"""``python -m analytics drift``: exit codes, JSON fields, table output, errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.cli import main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
COLUMN_FIELDS = {
    "column",
    "kind",
    "method",
    "statistic",
    "p_value",
    "p_value_adjusted",
    "threshold",
    "drifted",
    "n_reference",
    "n_current",
    "status",
    "reason",
    "exact",
    "statistics",
    "new_categories",
    "vanished_categories",
}


@pytest.fixture
def studio_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for the CLI: a throw-away var dir and data root (no S3)."""
    env = {"MMS_VAR_DIR": str(tmp_path / "var"), "MMS_DATA_URI": str(tmp_path / "store")}
    for name in list(os.environ):
        if name.startswith(("MMS_", "AWS_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def datasets(tmp_path: Path) -> tuple[Path, Path]:
    """A reference file and a current folder of two files; ``x`` and ``c`` drift, ``y`` does not."""
    rng = np.random.default_rng(12)
    n = 3000
    reference = tmp_path / "reference.parquet"
    pq.write_table(
        pa.table(
            {
                "x": rng.normal(0.0, 1.0, n),
                "y": rng.normal(5.0, 2.0, n),
                "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]).tolist(),
            }
        ),
        reference,
    )
    current = tmp_path / "current"
    current.mkdir()
    for part in range(2):
        pq.write_table(
            pa.table(
                {
                    "x": rng.normal(1.0, 1.0, n // 2),
                    "y": rng.normal(5.0, 2.0, n // 2),
                    "c": rng.choice(["a", "b", "c", "new"], n // 2, p=[0.2, 0.3, 0.2, 0.3]).tolist(),
                }
            ),
            current / f"part-{part}.parquet",
        )
    return reference, current


def _run_drift_command(
    studio_env: dict[str, str], reference: Path, current: Path, interpreter_options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``python [options] -m analytics drift --reference R --current C`` as a process of its own."""
    return subprocess.run(
        [
            sys.executable,
            *interpreter_options,
            "-m",
            "analytics",
            "drift",
            "--reference",
            str(reference),
            "--current",
            str(current),
        ],
        cwd=ROOT,
        env={**os.environ, **studio_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_module_entry_point_prints_json_and_exits_zero_on_drift(
    studio_env: dict[str, str], datasets: tuple[Path, Path]
) -> None:
    reference, current = datasets
    result = _run_drift_command(studio_env, reference, current)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["reference"] == str(reference) and payload["current"] == str(current)
    assert [c["column"] for c in payload["columns"]] == ["x", "y", "c"]
    for column in payload["columns"]:
        assert set(column) == COLUMN_FIELDS
        assert column["status"] == "ok" and column["n_reference"] == 3000 and column["n_current"] == 3000
    flagged = {c["column"]: c["drifted"] for c in payload["columns"]}
    assert flagged == {"x": True, "y": False, "c": True}
    by_name = {c["column"]: c for c in payload["columns"]}
    assert by_name["x"]["method"] == "ks" and 0 < by_name["x"]["statistic"] <= 1
    assert by_name["c"]["new_categories"] == ["new"]
    summary = payload["summary"]
    assert summary["n_columns"] == 3 and summary["n_drifted"] == 2
    assert summary["drift_share"] == pytest.approx(2 / 3) and summary["dataset_drifted"] is True


def test_table_format_and_column_selection(
    studio_env: dict[str, str], datasets: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reference, current = datasets
    code = main(
        [
            "drift",
            "--reference",
            str(reference),
            "--current",
            str(current),
            "--columns",
            "y, c",
            "--format",
            "table",
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    lines = output.splitlines()
    assert lines[0].split() == [
        "column",
        "kind",
        "method",
        "statistic",
        "p_adj",
        "threshold",
        "drifted",
        "status",
        "reason",
    ]
    assert lines[1].split()[:3] == ["y", "numeric", "ks"] and "no" in lines[1].split()
    assert lines[2].split()[:3] == ["c", "categorical", "chi2"] and "yes" in lines[2].split()
    assert "1 of 2 checked columns drifted (50%)" in output


def test_exact_mode_and_a_policy_file(
    studio_env: dict[str, str],
    datasets: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference, current = datasets
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"columns": {"y": {"method": "psi", "threshold": 0.5}}}))
    code = main(
        [
            "drift",
            "--reference",
            str(reference),
            "--current",
            str(current),
            "--exact",
            "--policy",
            str(policy),
        ]
    )
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    by_name = {c["column"]: c for c in payload["columns"]}
    assert by_name["x"]["exact"] is True and "ks_binned" in by_name["x"]["statistics"]
    assert by_name["y"]["method"] == "psi" and by_name["y"]["threshold"] == 0.5


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda ref, cur, tmp: ["--reference", str(tmp / "missing.parquet"), "--current", str(cur)],
            "cannot read the reference",
        ),
        (
            lambda ref, cur, tmp: ["--reference", str(ref), "--current", str(tmp / "empty_dir")],
            "cannot read the current data",
        ),
        (
            lambda ref, cur, tmp: ["--reference", str(ref), "--current", str(tmp / "corrupt.parquet")],
            "cannot read the current data",
        ),
        (
            lambda ref, cur, tmp: ["--reference", str(ref), "--current", str(cur), "--columns", "nope"],
            "unknown column",
        ),
        (lambda ref, cur, tmp: ["--reference", str(ref), "--current", str(cur), "--bins", "1"], "bins"),
        (
            lambda ref, cur, tmp: [
                "--reference",
                str(ref),
                "--current",
                str(cur),
                "--policy",
                str(tmp / "bad.json"),
            ],
            "invalid policy",
        ),
        (
            lambda ref, cur, tmp: ["--reference", "http://example.com/x.parquet", "--current", str(cur)],
            "only local paths and s3://",
        ),
    ],
)
def test_unreadable_input_exits_two_with_a_message(
    studio_env: dict[str, str],
    datasets: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_args,
    message: str,
) -> None:
    reference, current = datasets
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    (tmp_path / "bad.json").write_text('{"alpha": 2}')
    code = main(["drift", *make_args(reference, current, tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err


def test_bad_settings_exit_two(
    studio_env: dict[str, str],
    datasets: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MMS_DUCKDB_THREADS", "many")
    reference, current = datasets
    assert main(["drift", "--reference", str(reference), "--current", str(current)]) == 2
    assert "invalid settings: MMS_DUCKDB_THREADS" in capsys.readouterr().err


def test_usage_errors_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["drift", "--reference", "only.parquet"])
    assert exit_info.value.code == 2
    assert "--current" in capsys.readouterr().err


def test_duckdb_threads_change_no_figure(
    studio_env: dict[str, str], datasets: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reference, current = datasets
    reports = []
    for threads in ("1", "2"):
        args = ["drift", "--reference", str(reference), "--current", str(current), "--threads", threads]
        assert main(args) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1]
    with pytest.raises(SystemExit) as exit_info:
        main(["drift", "--reference", str(reference), "--current", str(current), "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads: must be at least 1" in capsys.readouterr().err


def test_command_line_loads_no_module_the_report_does_not_use(
    studio_env: dict[str, str], datasets: tuple[Path, Path]
) -> None:
    """Every module imported costs every report its CPU: pandas and SciPy (exact mode only), plotly,
    and numpy.ma (which ``np.unique`` pulls in, 15-20 ms) stay out of a default report."""
    reference, current = datasets
    result = _run_drift_command(studio_env, reference, current, interpreter_options=("-X", "importtime"))
    assert result.returncode == 0, result.stderr
    timings = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[1].strip() for line in timings}
    assert "numpy" in imported and "duckdb" in imported
    assert not {"numpy.ma", "pandas", "scipy", "plotly", "dash", "flask"} & imported


def test_module_entry_point_flushes_an_error_and_exits_two(
    studio_env: dict[str, str], datasets: tuple[Path, Path], tmp_path: Path
) -> None:
    """``python -m analytics`` ends without the interpreter's teardown: the message and exit code still
    get out."""
    reference, _ = datasets
    missing = tmp_path / "missing.parquet"
    result = _run_drift_command(studio_env, reference, missing)
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        result.stderr.startswith("error: cannot read the current data") and "missing.parquet" in result.stderr
    )
