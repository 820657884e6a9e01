"""Fixtures of the API unit tests: one seeded world for the session (real studio, SQLite, MLflow, Parquet)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.app.api.world import ApiWorld, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    """A seeded studio with a token per demo role (tests that change state create what they change)."""
    built = build_world(tmp_path_factory.mktemp("api"))
    with built.studio:
        yield built
