"""Project slug validation (no database)."""

from __future__ import annotations

import pytest

from jobs.projects import validate_slug
from jobs.users import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("slug", ["a", "credit-risk", "A_b-9", "x" * 64])
def test_accepted_slugs(slug: str) -> None:
    assert validate_slug(slug) == slug


@pytest.mark.parametrize(
    "slug", ["", "../x", "<img src=x>", "a" * 65, "has space", "x.y", "a/b", "slug\n", "é", "%2e%2e", None]
)
def test_refused_slugs(slug: str) -> None:
    with pytest.raises(InvalidInput, match="slug must be 1 to 64 characters"):
        validate_slug(slug)
