"""Root pytest configuration: shared fixtures live in ``tests/fixtures``."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.browser",
]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each test module on one xdist worker unless it names its own group.

    Under ``--dist loadgroup`` ungrouped tests are spread one by one, which would rebuild every
    module-scoped fixture (servers, MLflow stores, demo workspaces) on each worker and split tests
    that build on one another's state; the Spark tests share the group ``spark`` across modules.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))
