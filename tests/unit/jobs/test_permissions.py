"""The permission matrix: deny by default, Admin has all, project scoping, global-only actions."""

from __future__ import annotations

import pytest

from jobs.permissions import (
    GLOBAL_ONLY,
    MATRIX,
    Actor,
    Forbidden,
    Permission,
    Role,
    has_permission,
    permissions_of,
    require,
)

pytestmark = pytest.mark.unit

PROJECT_ROLES = [role for role in Role if role is not Role.ADMIN]


def _actor(roles: dict[str, set[Role]] | None = None, *, is_admin: bool = False) -> Actor:
    return Actor(
        user_id=1,
        username="tester",
        is_admin=is_admin,
        roles={slug: frozenset(held) for slug, held in (roles or {}).items()},
    )


def test_every_role_has_a_row_in_the_matrix() -> None:
    assert set(MATRIX) == set(Role)


@pytest.mark.parametrize("permission", list(Permission))
def test_nobody_and_roleless_users_are_denied_everything(permission: Permission) -> None:
    assert not has_permission(None, permission)
    assert not has_permission(_actor(), permission)
    assert not has_permission(_actor(), permission, "credit-risk")
    with pytest.raises(Forbidden, match=f"anonymous may not {permission.value}"):
        require(None, permission)


@pytest.mark.parametrize("permission", list(Permission))
def test_admin_holds_every_permission_everywhere(permission: Permission) -> None:
    admin = _actor(is_admin=True)
    assert has_permission(admin, permission)
    assert has_permission(admin, permission, "any-project")
    assert require(admin, permission, "any-project") is admin


@pytest.mark.parametrize("role", PROJECT_ROLES)
def test_roles_grant_exactly_their_matrix_row_on_their_project(role: Role) -> None:
    actor = _actor({"credit-risk": {role}})
    for permission in Permission:
        expected = permission in MATRIX[role] and permission not in GLOBAL_ONLY
        assert has_permission(actor, permission, "credit-risk") is expected, permission
        assert has_permission(actor, permission, "demand-forecast") is False, permission


@pytest.mark.parametrize("permission", sorted(GLOBAL_ONLY))
def test_global_only_permissions_need_the_admin_flag(permission: Permission) -> None:
    everything = _actor({"credit-risk": set(PROJECT_ROLES)})
    assert not has_permission(everything, permission)
    assert not has_permission(everything, permission, "credit-risk")
    # Even a project-level Admin membership is not the global flag.
    assert not has_permission(_actor({"credit-risk": {Role.ADMIN}}), permission, "credit-risk")
    assert has_permission(_actor(is_admin=True), permission)


def test_model_sponsor_approves_but_cannot_deploy_or_edit() -> None:
    sponsor = _actor({"credit-risk": {Role.MODEL_SPONSOR}})
    assert has_permission(sponsor, Permission.APPROVE_PROMOTION, "credit-risk")
    for permission in (
        Permission.DEPLOY,
        Permission.ROLLBACK,
        Permission.EDIT_PIPELINE,
        Permission.TRAIN_MODELS,
    ):
        assert not has_permission(sponsor, permission, "credit-risk")
    with pytest.raises(Forbidden, match="tester may not deploy on project 'credit-risk'"):
        require(sponsor, Permission.DEPLOY, "credit-risk")


def test_separation_of_duties_between_engineering_and_production() -> None:
    assert Permission.DEPLOY not in MATRIX[Role.ML_ENGINEER]
    assert Permission.APPROVE_PROMOTION not in MATRIX[Role.ML_ENGINEER]
    assert Permission.TRAIN_MODELS not in MATRIX[Role.PRODUCTION_TEAM]
    assert Permission.DEPLOY in MATRIX[Role.PRODUCTION_TEAM]


def test_project_none_means_on_at_least_one_project() -> None:
    actor = _actor({"credit-risk": {Role.MODEL_SPONSOR}, "demand-forecast": {Role.PRODUCTION_TEAM}})
    assert has_permission(actor, Permission.DEPLOY)
    assert has_permission(actor, Permission.APPROVE_PROMOTION)
    assert not has_permission(actor, Permission.DEPLOY, "credit-risk")
    assert actor.roles_in(None) == {Role.MODEL_SPONSOR, Role.PRODUCTION_TEAM}
    assert actor.roles_in("unknown") == frozenset()


def test_permissions_of_is_the_union_of_roles() -> None:
    combined = permissions_of([Role.MODEL_SPONSOR, Role.DATA_TEAM])
    assert combined == MATRIX[Role.MODEL_SPONSOR] | MATRIX[Role.DATA_TEAM]
    assert permissions_of([]) == frozenset()
