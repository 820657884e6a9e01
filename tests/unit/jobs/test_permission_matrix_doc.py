"""The README's permission matrix is the one the server enforces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.permissions import MATRIX, Permission, Role, matrix_markdown

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_embeds_the_enforced_matrix() -> None:
    text = README.read_text()
    match = re.search(r"<!-- permission-matrix:begin -->\n(.*?)\n<!-- permission-matrix:end -->", text, re.S)
    assert match, "README lost its permission-matrix markers"
    assert match.group(1).strip() == matrix_markdown()


def test_every_role_has_a_row_in_the_matrix_and_admin_has_everything() -> None:
    assert set(MATRIX) == set(Role)
    assert MATRIX[Role.ADMIN] == frozenset(Permission)
    assert Permission.DEPLOY not in MATRIX[Role.MODEL_SPONSOR]
    assert Permission.APPROVE_PROMOTION not in MATRIX[Role.ML_ENGINEER]
