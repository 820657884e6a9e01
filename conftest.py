"""Root pytest configuration: shared fixtures live in ``tests/fixtures``."""

pytest_plugins = [
    "tests.fixtures.scheduling",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.browser",
    "tests.fixtures.redis",
]
