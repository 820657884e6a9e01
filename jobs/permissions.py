"""The permission matrix (role x action), in one place.

The web app's guard, every callback and every state-changing job check
permissions through :func:`require`, so a check forgotten in the UI still
fails closed in the job. Deny by default: a permission absent from a role's
set is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Forbidden(PermissionError):
    """The acting user lacks the permission for this action."""


class Role(StrEnum):
    """Roles a user holds per project (Admin is global)."""

    ML_ENGINEER = "ml_engineer"
    DATA_TEAM = "data_team"
    PRODUCTION_TEAM = "production_team"
    MONITORING_TEAM = "monitoring_team"
    MODEL_SPONSOR = "model_sponsor"
    ADMIN = "admin"


class Permission(StrEnum):
    """Actions the studio authorises."""

    VIEW_DASHBOARD = "view_dashboard"
    VIEW_PROJECTS = "view_projects"
    MANAGE_PROJECTS = "manage_projects"
    MANAGE_MEMBERS = "manage_members"
    VIEW_PIPELINE = "view_pipeline"
    EDIT_PIPELINE = "edit_pipeline"
    LOCK_PIPELINE = "lock_pipeline"
    VIEW_MONITORING = "view_monitoring"
    ACK_ALERTS = "ack_alerts"
    EXPORT_DATA = "export_data"
    VIEW_MODELS = "view_models"
    TRAIN_MODELS = "train_models"
    RUN_BACKFILL = "run_backfill"
    REQUEST_PROMOTION = "request_promotion"
    APPROVE_PROMOTION = "approve_promotion"
    VIEW_APPROVALS = "view_approvals"
    VIEW_CICD = "view_cicd"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    VIEW_INTEGRATIONS = "view_integrations"
    MANAGE_INTEGRATIONS = "manage_integrations"
    MANAGE_ALERT_RULES = "manage_alert_rules"
    VIEW_AUDIT = "view_audit"
    VERIFY_AUDIT = "verify_audit"
    ADMIN_USERS = "admin_users"
    ADMIN_SETTINGS = "admin_settings"


P = Permission
_READ_ALL = frozenset(
    {
        P.VIEW_DASHBOARD,
        P.VIEW_PROJECTS,
        P.VIEW_PIPELINE,
        P.VIEW_MONITORING,
        P.VIEW_MODELS,
        P.VIEW_CICD,
        P.VIEW_APPROVALS,
    }
)

MATRIX: Mapping[Role, frozenset[Permission]] = {
    Role.ML_ENGINEER: _READ_ALL
    | {P.EDIT_PIPELINE, P.TRAIN_MODELS, P.REQUEST_PROMOTION, P.EXPORT_DATA, P.RUN_BACKFILL},
    Role.DATA_TEAM: _READ_ALL | {P.EDIT_PIPELINE, P.EXPORT_DATA, P.RUN_BACKFILL},
    Role.PRODUCTION_TEAM: _READ_ALL
    | {P.DEPLOY, P.ROLLBACK, P.LOCK_PIPELINE, P.VIEW_INTEGRATIONS, P.MANAGE_INTEGRATIONS, P.ACK_ALERTS},
    Role.MONITORING_TEAM: _READ_ALL
    | {P.ACK_ALERTS, P.MANAGE_ALERT_RULES, P.EXPORT_DATA, P.RUN_BACKFILL, P.VIEW_AUDIT},
    Role.MODEL_SPONSOR: frozenset(
        {P.VIEW_DASHBOARD, P.VIEW_PROJECTS, P.VIEW_MONITORING, P.VIEW_MODELS, P.VIEW_APPROVALS}
    )
    | {P.APPROVE_PROMOTION, P.VIEW_AUDIT},
    Role.ADMIN: frozenset(Permission),
}

# Permissions that only make sense globally (not per project): granted by the Admin role alone.
GLOBAL_ONLY = frozenset({P.ADMIN_USERS, P.ADMIN_SETTINGS, P.MANAGE_PROJECTS, P.VERIFY_AUDIT})


@dataclass(frozen=True)
class Actor:
    """Who is acting: enough of a user to authorise, detached from any DB session.

    Attributes:
        user_id: Database id of the user.
        username: Login name (recorded in the audit log).
        is_admin: Global administrator.
        roles: Roles per project slug.
    """

    user_id: int
    username: str
    is_admin: bool = False
    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)

    def roles_in(self, project: str | None) -> frozenset[Role]:
        """Roles held on ``project`` (all projects' roles when ``project`` is None), Admin included."""
        held: set[Role] = set()
        if project is None:
            for project_roles in self.roles.values():
                held |= project_roles
        else:
            held |= self.roles.get(project, frozenset())
        if self.is_admin:
            held.add(Role.ADMIN)
        return frozenset(held)


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    """Union of the permissions the given roles grant."""
    granted: set[Permission] = set()
    for role in roles:
        granted |= MATRIX.get(role, frozenset())
    return frozenset(granted)


def has_permission(actor: Actor | None, permission: Permission, project: str | None = None) -> bool:
    """Whether ``actor`` may perform ``permission`` (on ``project`` when given).

    With ``project=None`` the question is "on at least one project", which is what
    navigation and list pages need; actions on one project must pass the project.
    Global-only permissions need the Admin role.
    """
    if actor is None:
        return False
    if permission in GLOBAL_ONLY and not actor.is_admin:
        return False
    return permission in permissions_of(actor.roles_in(project))


def require(actor: Actor | None, permission: Permission, project: str | None = None) -> Actor:
    """Return ``actor`` if allowed, else raise :class:`Forbidden` naming what was refused.

    Raises:
        Forbidden: when the actor is missing or lacks the permission.
    """
    if not has_permission(actor, permission, project):
        who = actor.username if actor else "anonymous"
        where = f" on project {project!r}" if project else ""
        raise Forbidden(f"{who} may not {permission.value}{where}")
    assert actor is not None
    return actor


ROLE_TITLES: Mapping[Role, str] = {
    Role.ML_ENGINEER: "ML Engineer",
    Role.DATA_TEAM: "Data Team",
    Role.PRODUCTION_TEAM: "Production Team",
    Role.MONITORING_TEAM: "Monitoring Team",
    Role.MODEL_SPONSOR: "Model Sponsor",
    Role.ADMIN: "Admin",
}


def matrix_markdown() -> str:
    """The permission matrix as a Markdown table (the README embeds exactly this text)."""
    roles = list(Role)
    lines = [
        "| permission | " + " | ".join(ROLE_TITLES[role] for role in roles) + " |",
        "| --- |" + " :-: |" * len(roles),
    ]
    for permission in Permission:
        marks = ["✓" if permission in MATRIX[role] else "" for role in roles]
        scope = " (global)" if permission in GLOBAL_ONLY else ""
        lines.append(f"| `{permission.value}`{scope} | " + " | ".join(marks) + " |")
    return "\n".join(lines)
