"""Projects on SQLite and PostgreSQL: creation with environments and pipeline, validation, visibility."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs import audit
from jobs.db.models import PIPELINE_STAGES, AuditEntry, Environment, Pipeline, PipelineNode, Project
from jobs.permissions import Actor, Forbidden, Role
from jobs.projects import (
    archive_project,
    create_project,
    get_project,
    list_projects,
    update_project,
)
from jobs.users import Conflict, InvalidInput, actor_for, create_user, grant_role

pytestmark = pytest.mark.integration


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _member(session: Session, admin: Actor, username: str, grants: dict[str, Role]) -> Actor:
    user = create_user(session, admin, username, f"{username}-password")
    for slug, role in grants.items():
        grant_role(session, admin, user, slug, role)
    session.commit()
    actor = actor_for(session, user.id)
    assert actor is not None
    return actor


def test_create_project_adds_environments_and_the_eight_stage_pipeline(
    session: Session, admin: Actor
) -> None:
    project = create_project(session, admin, "credit-risk", "  Credit risk ", "PD scoring")
    session.commit()
    session.expire_all()

    stored = session.scalars(select(Project).where(Project.slug == "credit-risk")).one()
    assert (stored.name, stored.description, stored.archived, stored.created_by_id) == (
        "Credit risk",
        "PD scoring",
        False,
        admin.user_id,
    )
    assert stored.created_at.tzinfo is not None
    environments = session.execute(
        select(Environment.name, Environment.required_approvals)
        .where(Environment.project_id == project.id)
        .order_by(Environment.required_approvals)
    ).all()
    assert [tuple(row) for row in environments] == [("dev", 0), ("staging", 1), ("prod", 2)]
    pipeline = session.scalars(select(Pipeline).where(Pipeline.project_id == project.id)).one()
    assert pipeline.name == "default"
    nodes = session.scalars(
        select(PipelineNode).where(PipelineNode.pipeline_id == pipeline.id).order_by(PipelineNode.id)
    )
    assert [(node.stage, node.config, node.locked, node.last_status) for node in nodes] == [
        (stage, {}, False, "never_run") for stage in PIPELINE_STAGES
    ]
    assert len(PIPELINE_STAGES) == 8

    entry = audit.head(session)
    assert (entry.actor, entry.action, entry.target) == (
        "root-admin",
        "project.create",
        "project:credit-risk",
    )
    assert json.loads(entry.details)["environments"] == ["dev", "staging", "prod"]


def test_bad_slugs_are_refused_and_nothing_is_written(session: Session, admin: Actor) -> None:
    # The full list of accepted and refused slugs is in tests/unit/jobs/test_projects.py.
    for slug in ("../x", "<img src=x>", "", "slug\n"):
        with pytest.raises(InvalidInput, match="slug must be 1 to 64 characters"):
            create_project(session, admin, slug, "Name")
    session.commit()
    assert _count(session, Project) == 0
    assert _count(session, Environment) == 0
    assert session.scalars(select(AuditEntry.action)).all() == ["user.create"]


def test_slug_limits_that_are_accepted(session: Session, admin: Actor) -> None:
    for slug in ("a", "A_b-9", "x" * 64):
        create_project(session, admin, slug, "Name")
    session.commit()
    assert _count(session, Project) == 3


def test_names_and_descriptions_are_validated(session: Session, admin: Actor) -> None:
    with pytest.raises(InvalidInput, match="name must not be empty"):
        create_project(session, admin, "p1", "   ")
    with pytest.raises(InvalidInput, match="at most 128"):
        create_project(session, admin, "p1", "n" * 129)
    with pytest.raises(InvalidInput, match="description must be at most"):
        create_project(session, admin, "p1", "Name", "d" * 10_001)


def test_duplicate_slugs_are_a_conflict(session: Session, admin: Actor) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    session.commit()
    with pytest.raises(Conflict, match="already taken"):
        create_project(session, admin, "credit-risk", "Again")


def test_only_admins_manage_projects(session: Session, admin: Actor) -> None:
    create_project(session, admin, "credit-risk", "Credit risk")
    session.commit()
    engineer = _member(session, admin, "maya", {"credit-risk": Role.PRODUCTION_TEAM})
    with pytest.raises(Forbidden, match="manage_projects"):
        create_project(session, engineer, "mine", "Mine")
    with pytest.raises(Forbidden, match="manage_projects"):
        update_project(session, engineer, "credit-risk", name="Renamed")
    with pytest.raises(Forbidden, match="manage_projects"):
        archive_project(session, engineer, "credit-risk")
    session.rollback()
    assert session.scalars(select(Project.name)).all() == ["Credit risk"]


def test_update_and_archive_are_audited(session: Session, admin: Actor) -> None:
    create_project(session, admin, "credit-risk", "Credit risk", "old")
    updated = update_project(session, admin, "credit-risk", name="Credit risk v2", description="new")
    unchanged = update_project(session, admin, "credit-risk", name="Credit risk v2")
    archived = archive_project(session, admin, "credit-risk")
    archive_project(session, admin, "credit-risk")
    session.commit()

    assert updated is unchanged is archived
    assert (archived.name, archived.description, archived.archived) == ("Credit risk v2", "new", True)
    entries = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [entry.action for entry in entries] == [
        "user.create",
        "project.create",
        "project.update",
        "project.archive",
    ]
    assert json.loads(entries[2].details) == {
        "description": {"from": "old", "to": "new"},
        "name": {"from": "Credit risk", "to": "Credit risk v2"},
    }
    with pytest.raises(Conflict, match="no project"):
        update_project(session, admin, "missing", name="x")


def test_list_projects_shows_each_actor_only_its_projects(session: Session, admin: Actor) -> None:
    for slug in ("alpha", "beta", "gamma"):
        create_project(session, admin, slug, slug.title())
    archive_project(session, admin, "gamma")
    session.commit()
    alpha_only = _member(session, admin, "alpha-user", {"alpha": Role.ML_ENGINEER})
    sponsor = _member(session, admin, "sponsor", {"beta": Role.MODEL_SPONSOR, "gamma": Role.MODEL_SPONSOR})
    outsider = _member(session, admin, "outsider", {})

    def slugs(actor: Actor | None, **options: bool) -> list[str]:
        return [project.slug for project in list_projects(session, actor, **options)]

    assert slugs(admin) == ["alpha", "beta"]
    assert slugs(admin, include_archived=True) == ["alpha", "beta", "gamma"]
    assert slugs(alpha_only) == ["alpha"]
    assert slugs(sponsor) == ["beta"]
    assert slugs(sponsor, include_archived=True) == ["beta", "gamma"]
    assert slugs(outsider) == []
    assert slugs(None) == []

    assert get_project(session, alpha_only, "alpha").name == "Alpha"
    with pytest.raises(Forbidden, match="view_projects on project 'beta'"):
        get_project(session, alpha_only, "beta")
