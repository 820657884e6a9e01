"""The request-id -> day map shared by the gateway's worker processes."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.gateway.request_dates import RequestDates

pytestmark = pytest.mark.unit

DAY = dt.date(2024, 3, 1)


def test_put_then_get_and_unknown_ids(tmp_path: Path) -> None:
    dates = RequestDates(tmp_path / "map.bin", capacity=1024)
    dates.put("p", "m", "r1", DAY)
    dates.put("p", "m", "r2", DAY + dt.timedelta(days=1))
    assert dates.get("p", "m", "r1") == DAY
    assert dates.get("p", "m", "r2") == DAY + dt.timedelta(days=1)
    assert dates.get("p", "m", "r3") is None
    assert dates.get("p", "other", "r1") is None  # the key includes project and model
    dates.put("p", "m", "r1", DAY - dt.timedelta(days=400))
    assert dates.get("p", "m", "r1") == DAY - dt.timedelta(days=400)
    dates.close()


def test_another_process_sees_the_entries_at_once(tmp_path: Path) -> None:
    path = tmp_path / "map.bin"
    dates = RequestDates(path, capacity=1024)
    dates.put("p", "m", "written-here", DAY)
    code = (
        "import datetime as dt, sys; from jobs.gateway.request_dates import RequestDates; "
        "d = RequestDates(sys.argv[1]); print(d.get('p', 'm', 'written-here')); "
        "d.put('p', 'm', 'written-there', dt.date(2024, 3, 2))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == "2024-03-01"
    assert dates.get("p", "m", "written-there") == dt.date(2024, 3, 2)
    dates.close()


def test_an_existing_file_keeps_its_capacity_and_entries(tmp_path: Path) -> None:
    path = tmp_path / "map.bin"
    first = RequestDates(path, capacity=64)
    first.put("p", "m", "kept", DAY)
    first.close()
    again = RequestDates(path, capacity=1 << 20)
    assert again.capacity == 64
    assert again.get("p", "m", "kept") == DAY
    again.close()
    (tmp_path / "junk.bin").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="not a request-date map"):
        RequestDates(tmp_path / "junk.bin")


def test_a_full_map_forgets_old_entries_but_remembers_recent_ones(tmp_path: Path) -> None:
    dates = RequestDates(tmp_path / "map.bin", capacity=256)
    for i in range(5_000):
        dates.put("p", "m", f"id-{i}", DAY)
    remembered = sum(dates.get("p", "m", f"id-{i}") is not None for i in range(5_000))
    assert remembered <= 256
    assert remembered > 150  # 4-way sets keep the map mostly full
    assert dates.get("p", "m", "id-4999") == DAY  # the newest entry is always there
    dates.close()
