"""The drift command reads SeaweedFS S3 as it reads a local folder: the same report, to the byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fixtures.s3 import SeaweedS3

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def features(rng: np.random.Generator, n: int, shift: float) -> pa.Table:
    """Numeric (with nulls and integers) and categorical features; ``shift`` moves two of them."""
    return pa.table(
        {
            "income": rng.lognormal(10 + shift, 0.5, n),
            "age": pa.array(rng.normal(40, 10, n), mask=rng.random(n) < 0.05),
            "visits": rng.poisson(3, n),
            "score": rng.normal(shift, 1, n),
            "region": rng.choice(
                ["north", "south", "east", "west"], n, p=[0.4 - shift / 2, 0.3, 0.2, 0.1 + shift / 2]
            ),
            "plan": rng.choice([f"p{i}" for i in range(30)], n),
        }
    )


def drift_report(reference: str, current: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "analytics", "drift", "--reference", reference, "--current", current],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_drift_report_from_s3_equals_the_one_from_a_local_folder(
    seaweedfs: SeaweedS3, tmp_path: Path
) -> None:
    rng = np.random.default_rng(41)
    prefix = f"drift-{uuid.uuid4().hex}"
    client = seaweedfs.client()
    for name, shift in (("reference", 0.0), ("current", 0.2)):
        # Several batches of the stream (32,768 rows), split between the command's two scans.
        path = tmp_path / name / "data.parquet"
        path.parent.mkdir()
        pq.write_table(features(rng, 90_000, shift), path, row_group_size=20_000)
        client.upload_file(str(path), seaweedfs.bucket, f"{prefix}/{name}/data.parquet")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MMS_")}
    base["MMS_VAR_DIR"] = str(tmp_path / "var")

    local = drift_report(
        str(tmp_path / "reference"),
        str(tmp_path / "current"),
        {**base, "MMS_DATA_URI": str(tmp_path / "data")},
    )
    on_s3 = drift_report(
        f"s3://{seaweedfs.bucket}/{prefix}/reference",
        f"s3://{seaweedfs.bucket}/{prefix}/current",
        {
            **base,
            "MMS_DATA_URI": f"s3://{seaweedfs.bucket}/{prefix}",
            "MMS_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
            "MMS_S3_REGION": seaweedfs.region,
            "MMS_S3_ACCESS_KEY_ID": seaweedfs.access_key,
            "MMS_S3_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        },
    )
    # The report names its sources; everything else is the same, every statistic to the last bit.
    assert on_s3.pop("reference").startswith("s3://") and on_s3.pop("current").startswith("s3://")
    assert local.pop("reference") == str(tmp_path / "reference")
    local.pop("current")
    assert on_s3 == local
    flagged = {column["column"] for column in local["columns"] if column["drifted"]}
    assert {"income", "score", "region"} <= flagged
    assert local["summary"]["n_reference_rows"] == local["summary"]["n_current_rows"] == 90_000
