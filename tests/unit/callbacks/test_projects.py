"""Projects page callbacks called as plain functions, signed in as different roles of a real studio."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dash
import pytest
from dash.exceptions import PreventUpdate
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import func, select

import callbacks.projects as cb
from jobs.db.models import AuditEntry, Membership, PipelineNode, Project, User
from jobs.projects import create_project
from tests.unit.app.studio import Studio, build_studio, shown, signed_in

pytestmark = pytest.mark.unit

XSS_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A seeded studio plus ``hidden-project``, on which no demo member holds a role."""
    with build_studio(tmp_path_factory.mktemp("projects-callbacks"), hidden_project=True) as built:
        yield built


def audit_count(studio: Studio, action: str) -> int:
    with studio.db() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action))


def test_admin_creates_a_project_with_environments_pipeline_and_audit(studio: Studio) -> None:
    before = audit_count(studio, "project.create")
    with signed_in(studio, "admin"):
        message, refresh = cb.create_project_clicked(1, " fraud-watch ", "Fraud watch", "Card fraud.", 4)
    assert message.color == "success" and "fraud-watch" in message.children
    assert refresh == 5
    with studio.db() as session:
        project = session.scalars(select(Project).where(Project.slug == "fraud-watch")).one()
        assert sorted(env.name for env in project.environments) == ["dev", "prod", "staging"]
        stages = session.scalars(
            select(PipelineNode.stage)
            .join(PipelineNode.pipeline)
            .where(PipelineNode.pipeline.has(project_id=project.id))
        ).all()
        assert len(stages) == 8
    assert audit_count(studio, "project.create") == before + 1


def test_invalid_or_duplicate_project_is_refused_with_the_jobs_message(studio: Studio) -> None:
    with signed_in(studio, "admin"):
        bad, refresh = cb.create_project_clicked(1, "no spaces/allowed", "Bad", "", 2)
        duplicate, _ = cb.create_project_clicked(1, "credit-risk", "Again", "", 2)
    assert bad.color == "danger" and "slug must be" in bad.children
    assert refresh is dash.no_update  # no refresh: the form keeps what the user typed
    assert duplicate.color == "danger" and "already taken" in duplicate.children
    with studio.db() as session:
        assert session.scalar(select(func.count()).select_from(Project).where(Project.name == "Again")) == 0


@pytest.mark.parametrize("username", ["mlengineer", "production", "sponsor1"])
def test_roles_without_manage_projects_change_nothing(studio: Studio, username: str) -> None:
    before = audit_count(studio, "project.create")
    with signed_in(studio, username):
        with pytest.raises(PreventUpdate):
            cb.create_project_clicked(1, f"by-{username}", "Sneaky", "", 0)
        with pytest.raises(PreventUpdate):
            cb.save_project_clicked(1, "credit-risk", "Renamed", "", 0)
        with pytest.raises(PreventUpdate):
            cb.archive_project_confirmed(1, "credit-risk", 0)
    with studio.db() as session:
        project = session.scalars(select(Project).where(Project.slug == "credit-risk")).one()
        assert (project.name, project.archived) == ("Credit risk", False)
        assert (
            session.scalar(select(func.count()).select_from(Project).where(Project.slug == f"by-{username}"))
            == 0
        )
    assert audit_count(studio, "project.create") == before


def test_admin_edits_then_archives_a_project(studio: Studio) -> None:
    with studio.db(write=True) as session:
        create_project(session, studio.actor("admin"), "short-lived", "Short lived")
    with signed_in(studio, "admin"):
        saved, _ = cb.save_project_clicked(1, "short-lived", "Short lived (v2)", "Now described.", 0)
        empty_name, _ = cb.save_project_clicked(1, "short-lived", "   ", "", 0)
        archived, _ = cb.archive_project_confirmed(1, "short-lived", 0)
        options, _value = cb.list_project_options("project-select", 0, None)
    assert saved.color == "success" and empty_name.color == "danger"
    assert archived.color == "success"
    with studio.db() as session:
        project = session.scalars(select(Project).where(Project.slug == "short-lived")).one()
        assert (project.name, project.description, project.archived) == (
            "Short lived (v2)",
            "Now described.",
            True,
        )
    assert "short-lived" not in [option["value"] for option in options]


def test_project_details_show_environments_with_approvals_and_members(studio: Studio) -> None:
    with signed_in(studio, "sponsor1"):
        environments, members, name, description = cb.show_project("credit-risk")
    assert name == "Credit risk" and "Probability-of-default" in description
    env_texts = shown(environments)
    assert env_texts[env_texts.index("dev") + 1] == "0"
    assert env_texts[env_texts.index("staging") + 1] == "1"
    assert env_texts[env_texts.index("prod") + 1] == "2"
    member_texts = shown(members)
    assert {"mlengineer", "production", "sponsor2"} <= set(member_texts)
    assert "Model Sponsor" in member_texts and "admin" not in member_texts


def test_forged_project_slug_gets_nothing(studio: Studio) -> None:
    with signed_in(studio, "sponsor1"):
        with pytest.raises(PreventUpdate):
            cb.show_project("hidden-project")
        with pytest.raises(PreventUpdate):
            cb.show_project("no-such-project")
        options, value = cb.list_project_options("project-select", 0, "hidden-project")
    slugs = [option["value"] for option in options]
    assert "hidden-project" not in slugs and value == slugs[0]


def test_project_list_shows_only_visible_projects(studio: Studio) -> None:
    with signed_in(studio, "production"):
        table = shown(cb.show_projects("projects-table"))
    assert "Credit risk" in table and "Demand forecast" in table
    assert "Hidden project" not in table


def test_admin_grants_and_revokes_a_role_through_jobs_users(studio: Studio) -> None:
    def held() -> set[str]:
        with studio.db() as session:
            return set(
                session.scalars(
                    select(Membership.role)
                    .join(User, User.id == Membership.user_id)
                    .join(Project, Project.id == Membership.project_id)
                    .where(User.username == "datateam", Project.slug == "hidden-project")
                )
            )

    grants = audit_count(studio, "user.role_grant")
    with signed_in(studio, "admin"):
        granted, refresh = cb.grant_clicked(1, "hidden-project", "datateam", "ml_engineer", 1)
        assert granted.color == "success" and refresh == 2
        assert held() == {"ml_engineer"}
        with_admin, _ = cb.grant_clicked(1, "hidden-project", "datateam", "admin", 1)
        assert with_admin.color == "danger" and "global flag" in with_admin.children
        revoked, _ = cb.revoke_clicked(1, "hidden-project", "datateam", "ml_engineer", 2)
        again, _ = cb.revoke_clicked(1, "hidden-project", "datateam", "ml_engineer", 3)
        *_hidden, candidates = cb.management_controls("hidden-project")
    assert revoked.color == "success" and "no longer holds" in revoked.children
    assert again.color == "success" and "nothing to revoke" in again.children
    assert held() == set()
    assert audit_count(studio, "user.role_grant") == grants + 1
    assert "datateam" in [option["value"] for option in candidates]


@pytest.mark.parametrize("username", ["mlengineer", "monitoring"])
def test_members_cannot_be_changed_without_manage_members(studio: Studio, username: str) -> None:
    grants = audit_count(studio, "user.role_grant")
    with signed_in(studio, username):
        with pytest.raises(PreventUpdate):
            cb.grant_clicked(1, "credit-risk", username, "data_team", 0)
        with pytest.raises(PreventUpdate):
            cb.revoke_clicked(1, "credit-risk", "sponsor1", "model_sponsor", 0)
        assert cb.management_controls("credit-risk")[-1] == []  # no list of accounts for them
        # Past the guard (as if @requires were bypassed), the job refuses too.
        with pytest.raises(PreventUpdate):
            cb.change_membership(True, "credit-risk", username, "data_team")
    assert audit_count(studio, "user.role_grant") == grants
    with studio.db() as session:
        sponsor_roles = session.scalar(
            select(func.count())
            .select_from(Membership)
            .join(User, User.id == Membership.user_id)
            .where(User.username == "sponsor1")
        )
    assert sponsor_roles == 2


def test_project_name_with_markup_is_plain_text(studio: Studio) -> None:
    with studio.db(write=True) as session:
        create_project(session, studio.actor("admin"), "markup-name", XSS_NAME, XSS_NAME)
    with signed_in(studio, "admin"):
        table = cb.show_projects("projects-table")
        options, _value = cb.list_project_options("project-select", 0, None)
        _environments, _members, name, _description = cb.show_project("markup-name")
    serialized = json.dumps(table, cls=PlotlyJSONEncoder)
    assert XSS_NAME in shown(table)
    assert "dangerously_allow_html" not in serialized and '"type": "Markdown"' not in serialized
    assert f"{XSS_NAME} (markup-name)" in [option["label"] for option in options]
    assert name == XSS_NAME


@pytest.mark.parametrize(
    ("username", "slug", "expected"),
    [
        ("admin", "credit-risk", (False, False, False)),
        ("mlengineer", "credit-risk", (True, True, True)),
        ("sponsor1", None, (True, True, True)),
    ],
)
def test_management_forms_are_revealed_by_permission(
    studio: Studio, username: str, slug: str | None, expected: tuple[bool, bool, bool]
) -> None:
    with signed_in(studio, username):
        create_hidden, edit_hidden, members_hidden, roles, _users = cb.management_controls(slug)
    assert (create_hidden, edit_hidden, members_hidden) == expected
    assert "admin" not in [role["value"] for role in roles] and len(roles) == 5
