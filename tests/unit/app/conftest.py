"""Fixtures of the web-app unit tests: a real studio on a temporary SQLite database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.app.studio import Studio, build_studio


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """One seeded studio per test module (tests use distinct client addresses to stay independent)."""
    with build_studio(tmp_path_factory.mktemp("studio")) as built:
        yield built
