"""What only S3 can show: the raw objects behind the store, seen through boto3 on SeaweedFS.

The store's behaviour on both backends is tested in ``tests/unit/analytics/test_store.py``
(its ``[s3]`` cases); here the bucket is inspected directly, so a leftover staging
object or a half-published key cannot hide behind the store's own listing.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid

import pyarrow as pa
import pytest

import analytics.store
from analytics.store import STAGING_DIR, AccessDenied, ParquetStore, StoreError, connect_duckdb, read_source
from tests.fixtures.relay import TcpRelay
from tests.fixtures.s3 import SeaweedS3

pytestmark = pytest.mark.integration


def _keys(server: SeaweedS3, prefix: str) -> list[str]:
    client = server.client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix + "/"):
        keys.extend(item["Key"][len(prefix) + 1 :] for item in page.get("Contents", []))
    return sorted(key for key in keys if not key.endswith("/"))


@pytest.fixture
def s3_store(s3_store_config) -> ParquetStore:
    store = ParquetStore(s3_store_config)
    yield store
    store.close()


def _prefix(store: ParquetStore) -> str:
    return store.root.removeprefix("s3://").split("/", 1)[1]


def test_server_enforces_the_identity_file(seaweedfs: SeaweedS3) -> None:
    from botocore.exceptions import ClientError

    assert seaweedfs.bucket in {b["Name"] for b in seaweedfs.client().list_buckets()["Buckets"]}
    impostor = SeaweedS3(seaweedfs.endpoint_url, seaweedfs.access_key, "wrong-secret", seaweedfs.bucket)
    with pytest.raises(ClientError):
        impostor.client().put_object(Bucket=seaweedfs.bucket, Key="x", Body=b"x")


def test_published_object_and_nothing_else(seaweedfs: SeaweedS3, s3_store: ParquetStore) -> None:
    partition = {"model": "churn", "date": "2026-01-01"}
    uri = s3_store.write_partition("predictions", partition, pa.table({"score": [0.5, 0.6]}))
    s3_store.write_partition("predictions", partition, pa.table({"score": [0.7]}))
    assert uri == f"{s3_store.root}/predictions/model=churn/date=2026-01-01/data.parquet"
    assert _keys(seaweedfs, _prefix(s3_store)) == ["predictions/model=churn/date=2026-01-01/data.parquet"]
    assert s3_store.read("predictions").column("score").to_pylist() == [0.7]


def test_failed_publish_leaves_no_staging_object(
    seaweedfs: SeaweedS3, s3_store: ParquetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_store.write_partition("predictions", {"model": "churn"}, pa.table({"score": [1.0]}))

    def crash(staged: str, final: str) -> None:
        # The staged object really exists in the bucket at this point.
        assert any(k.startswith(f"{STAGING_DIR}/") for k in _keys(seaweedfs, _prefix(s3_store)))
        raise ConnectionError("simulated network failure during publish")

    monkeypatch.setattr(s3_store, "_publish", crash)
    with pytest.raises(StoreError, match=r"cannot publish .*simulated network failure") as caught:
        s3_store.write_partition("predictions", {"model": "churn"}, pa.table({"score": [2.0, 3.0]}))
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert _keys(seaweedfs, _prefix(s3_store)) == ["predictions/model=churn/data.parquet"]
    assert s3_store.read("predictions").column("score").to_pylist() == [1.0]


def test_store_at_the_bucket_top(seaweedfs: SeaweedS3) -> None:
    store = ParquetStore(seaweedfs.store_config(""))
    dataset = f"top{uuid.uuid4().hex[:8]}"
    try:
        assert store.root == f"s3://{seaweedfs.bucket}"
        store.write_partition(dataset, {"day": "2026-01-01"}, pa.table({"n": [1, 2]}))
        assert store.list_partitions(dataset) == [{"day": "2026-01-01"}]
        assert store.read(dataset, columns=["n"]).column("n").to_pylist() == [1, 2]
        assert store.delete_partition(dataset, {"day": "2026-01-01"}) == 1
        assert store.read(dataset).num_rows == 0
    finally:
        store.close()


def test_extra_s3_prefix_can_be_allowed(seaweedfs: SeaweedS3, s3_store: ParquetStore) -> None:
    other = ParquetStore(seaweedfs.store_config(f"other-{uuid.uuid4().hex}"))
    try:
        other.write_partition("shared", {"k": "v"}, pa.table({"a": [7]}))
        shared = other.dataset_uri("shared")
        with pytest.raises(AccessDenied):
            read_source(s3_store.cursor(), shared)
        con = connect_duckdb(s3_store.config, allowed_paths=[shared])
        try:
            assert read_source(con, shared).aggregate("sum(a)").fetchone() == (7,)
            with pytest.raises(AccessDenied):
                read_source(con, other.root)
        finally:
            con.close()
    finally:
        other.close()


def test_wrong_credentials_fail_with_a_store_error(seaweedfs: SeaweedS3, s3_store: ParquetStore) -> None:
    s3_store.write_partition("predictions", {"model": "churn"}, pa.table({"score": [1.0]}))
    from dataclasses import replace

    wrong = ParquetStore(replace(s3_store.config, s3_secret_access_key="wrong-secret"))
    try:
        with pytest.raises(StoreError, match="cannot write staging file"):
            wrong.write_partition("predictions", {"model": "fraud"}, pa.table({"score": [1.0]}))
        with pytest.raises(StoreError):
            read_source(wrong.cursor(), s3_store.list_files("predictions")[0].path).fetchall()
    finally:
        wrong.close()
    assert _keys(seaweedfs, _prefix(s3_store)) == ["predictions/model=churn/data.parquet"]


def test_a_read_that_met_a_rewrite_is_retried_on_a_new_cursor(
    seaweedfs: SeaweedS3, s3_store_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's cursor that failed on a replaced object kept failing on it; the retry must not use it.

    The relay holds the reader's first GET until the object has been replaced behind its HEAD,
    so the first attempt fails every time; with two attempts allowed, the second must read the
    new version. On the failed cursor the second attempt failed the same way (every retry, for
    minutes, in the suite's rewrite test).
    """
    relay = TcpRelay(int(seaweedfs.endpoint_url.rsplit(":", 1)[1]))
    relay.up()
    writer = ParquetStore(s3_store_config)
    reader = ParquetStore(
        dataclasses.replace(s3_store_config, s3_endpoint_url=f"http://127.0.0.1:{relay.port}")
    )
    rows = 20_000
    writer.write_partition("versions", {"k": "v"}, pa.table({"version": pa.array([0] * rows)}))
    monkeypatch.setattr(analytics.store, "READ_ATTEMPTS", 2)
    outcome: dict[str, object] = {}

    def read_twice() -> None:
        try:
            outcome["first"] = reader.read("versions")
            outcome["again"] = reader.read("versions")  # the same thread: its cursor now
        except Exception as error:
            outcome["error"] = error

    relay.hold_next_get("/versions/")
    thread = threading.Thread(target=read_twice)
    try:
        thread.start()
        assert relay.held.wait(timeout=30), "the reader sent no GET"
        writer.write_partition("versions", {"k": "v"}, pa.table({"version": pa.array([1] * rows)}))
        relay.release()
        thread.join(timeout=120)
    finally:
        relay.close()
        reader.close()
        writer.close()
    assert "error" not in outcome, outcome.get("error")
    for name in ("first", "again"):
        table = outcome[name]
        assert table.num_rows == rows
        assert table.column("version").unique().to_pylist() == [1]
