"""docs/ARCHITECTURE.md must match the code: every table, dataset layout, CLI command and process it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.cli import COMMANDS
from jobs.contracts import PARTITION_KEYS
from jobs.db.models import Base

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")


def test_every_metadata_table_is_described() -> None:
    named = set(re.findall(r"`([a-z_]+)`", DOC))
    missing = sorted(set(Base.metadata.tables) - named - {"alembic_version"})
    assert not missing, f"tables missing from docs/ARCHITECTURE.md: {missing}"


def test_no_table_is_described_that_does_not_exist() -> None:
    storage = DOC.split("### Metadata database", 1)[1].split("### Model registry", 1)[0]
    table_rows = [line for line in storage.splitlines() if line.startswith("| ") and "`" in line]
    named = {name for line in table_rows for name in re.findall(r"`([a-z_]+)`", line)}
    unknown = sorted(named - set(Base.metadata.tables))
    assert not unknown, f"docs/ARCHITECTURE.md names tables the models do not have: {unknown}"


def test_dataset_partitions_match_the_contracts() -> None:
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `([a-z /]+)`", DOC, flags=re.MULTILINE))
    for dataset, keys in PARTITION_KEYS.items():
        assert dataset in rows, f"dataset {dataset} missing from the storage layout"
        assert tuple(part.strip() for part in rows[dataset].split("/")) == keys, dataset


def test_cli_commands_named_in_the_doc_exist() -> None:
    names = {name for name, _target in COMMANDS}
    used = set(re.findall(r"python -m jobs ([a-z][a-z-]*)", DOC))
    unknown = sorted(used - names)
    assert not unknown, f"docs/ARCHITECTURE.md uses commands jobs/cli.py lacks: {unknown}"


def test_code_paths_named_in_the_doc_exist() -> None:
    paths = set(re.findall(r"`((?:app|jobs|analytics|callbacks|pages|infra|tests)/[\w./-]*)`", DOC))
    missing = sorted(path for path in paths if not (ROOT / path.rstrip("/")).exists())
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"
