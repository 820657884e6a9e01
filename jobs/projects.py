"""Projects: creation with their environments and default pipeline, edits, archiving, listing.

A project slug becomes a Parquet partition key and part of URLs, so it is
validated strictly (``^[A-Za-z0-9_-]{1,64}$``): no path separators, dots or markup.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs import audit
from jobs.db.models import ENVIRONMENT_NAMES, PIPELINE_STAGES, Environment, Pipeline, PipelineNode, Project
from jobs.permissions import Actor, Permission, has_permission, require
from jobs.users import Conflict, InvalidInput

SLUG_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Approvals needed to promote a model into each environment.
REQUIRED_APPROVALS = {"dev": 0, "staging": 1, "prod": 2}
DEFAULT_PIPELINE = "default"
MAX_NAME_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 10_000


def validate_slug(slug: str) -> str:
    """Return ``slug`` if it matches ``^[A-Za-z0-9_-]{1,64}$``.

    Raises:
        InvalidInput: otherwise.
    """
    if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug):
        raise InvalidInput("project slug must be 1 to 64 characters of letters, digits, '_' or '-'")
    return slug


def _validate_name(name: str) -> str:
    cleaned = name.strip() if isinstance(name, str) else ""
    if not cleaned:
        raise InvalidInput("project name must not be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidInput(f"project name must be at most {MAX_NAME_LENGTH} characters")
    return cleaned


def _validate_description(description: str) -> str:
    if not isinstance(description, str):
        raise InvalidInput("project description must be text")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(f"project description must be at most {MAX_DESCRIPTION_LENGTH} characters")
    return description


def find_project(session: Session, slug: str) -> Project | None:
    """The project with ``slug``, ``None`` when there is none (no permission check)."""
    return session.scalars(select(Project).where(Project.slug == slug)).first()


def project_by_slug(session: Session, slug: str) -> Project:
    """The project with ``slug`` (no permission check).

    Raises:
        Conflict: if there is no such project.
    """
    project = find_project(session, slug)
    if project is None:
        raise Conflict(f"no project with slug {slug!r}")
    return project


def create_project(session: Session, actor: Actor, slug: str, name: str, description: str = "") -> Project:
    """Create a project with dev/staging/prod environments and the default 8-stage pipeline.

    Args:
        session: Session of the transaction (the caller commits).
        actor: Who creates it; needs ``MANAGE_PROJECTS`` (Admin).
        slug: Identifier used in URLs and storage paths.
        name: Display name.
        description: Free text.

    Returns:
        The new, flushed project.

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_PROJECTS``.
        InvalidInput: for a bad slug, name or description.
        Conflict: if the slug is taken.
    """
    require(actor, Permission.MANAGE_PROJECTS)
    validate_slug(slug)
    name = _validate_name(name)
    description = _validate_description(description)
    if find_project(session, slug) is not None:
        raise Conflict(f"project slug {slug!r} is already taken")
    project = Project(slug=slug, name=name, description=description, created_by_id=actor.user_id)
    project.environments = [
        Environment(name=env_name, required_approvals=REQUIRED_APPROVALS[env_name])
        for env_name in ENVIRONMENT_NAMES
    ]
    session.add(project)
    session.flush()
    pipeline = Pipeline(project_id=project.id, name=DEFAULT_PIPELINE)
    pipeline.nodes = [PipelineNode(stage=stage, config={}) for stage in PIPELINE_STAGES]
    session.add(pipeline)
    session.flush()
    audit.append(
        session,
        actor.username,
        "project.create",
        f"project:{slug}",
        {"name": name, "environments": list(ENVIRONMENT_NAMES), "pipeline": DEFAULT_PIPELINE},
    )
    return project


def update_project(
    session: Session,
    actor: Actor,
    slug: str,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Project:
    """Change a project's name and/or description (the slug is permanent).

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_PROJECTS``.
        InvalidInput: for a bad name or description.
        Conflict: if there is no such project.
    """
    require(actor, Permission.MANAGE_PROJECTS)
    project = project_by_slug(session, slug)
    changes: dict[str, dict[str, str]] = {}
    if name is not None:
        name = _validate_name(name)
        if name != project.name:
            changes["name"] = {"from": project.name, "to": name}
            project.name = name
    if description is not None:
        description = _validate_description(description)
        if description != project.description:
            changes["description"] = {"from": project.description, "to": description}
            project.description = description
    if changes:
        session.flush()
        audit.append(session, actor.username, "project.update", f"project:{slug}", changes)
    return project


def archive_project(session: Session, actor: Actor, slug: str) -> Project:
    """Archive a project: hidden from lists, its data and history kept.

    Raises:
        Forbidden: if ``actor`` lacks ``MANAGE_PROJECTS``.
        Conflict: if there is no such project.
    """
    require(actor, Permission.MANAGE_PROJECTS)
    project = project_by_slug(session, slug)
    if not project.archived:
        project.archived = True
        session.flush()
        audit.append(session, actor.username, "project.archive", f"project:{slug}")
    return project


def list_projects(session: Session, actor: Actor | None, *, include_archived: bool = False) -> list[Project]:
    """Projects ``actor`` may see, ordered by slug: all for an admin, else those it holds a role on.

    Args:
        session: Session to read with.
        actor: Who asks; ``None`` sees nothing.
        include_archived: Also list archived projects.
    """
    if actor is None:
        return []
    query = select(Project).order_by(Project.slug)
    if not include_archived:
        query = query.where(Project.archived.is_(False))
    if not actor.is_admin:
        visible = [slug for slug in actor.roles if has_permission(actor, Permission.VIEW_PROJECTS, slug)]
        if not visible:
            return []
        query = query.where(Project.slug.in_(visible))
    return list(session.scalars(query))


def get_project(session: Session, actor: Actor | None, slug: str) -> Project:
    """The project ``slug`` if ``actor`` may view it.

    Raises:
        Forbidden: if ``actor`` lacks ``VIEW_PROJECTS`` on it.
        Conflict: if there is no such project.
    """
    require(actor, Permission.VIEW_PROJECTS, slug)
    return project_by_slug(session, slug)
